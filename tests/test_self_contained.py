"""A user's clone has no ../shared: the package, configs, launchers, README and pyproject must not point there,
and the tests they cite exist."""

from __future__ import annotations

import re

from conftest import ROOT

# What a user's clone reads: the package, its configs, the launchers, the README and pyproject.toml
USER_FACING = ("cat_experiments", "conf", "launchers", "README.md", "pyproject.toml")
TEXT_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".md", ".txt", ".sh", ".toml", ".cfg")


def _user_facing_lines():
    for name in USER_FACING:
        top = ROOT / name
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    yield f"{path.relative_to(ROOT)}:{i}", line


def test_package_configs_launchers_readme_and_pyproject_never_mention_shared():
    offenders = [f"{where}: {line.strip()}" for where, line in _user_facing_lines() if "shared/" in line]
    assert not offenders, ("a user's clone has no ../shared: point these at docs/, tests/fixtures/ or the "
                           "package's data/ instead:\n" + "\n".join(offenders))


def test_the_tests_they_cite_exist():
    """Every ``tests/<file>.py`` (and ``::test_name``) that the package, configs, launchers, README and
    pyproject cite is there."""
    offenders = []
    for where, line in _user_facing_lines():
        for file, test in re.findall(r"\b(tests/[\w/]+\.py)(?:::(\w+))?", line):
            path = ROOT / file
            if not path.is_file():
                offenders.append(f"{where}: {file} does not exist")
            elif test and not re.search(rf"^def {test}\(", path.read_text(encoding="utf-8"), re.M):
                offenders.append(f"{where}: {file} has no {test}")
    assert not offenders, "\n".join(offenders)


def test_docs_the_code_points_to_exist():
    for doc in ("method.md", "fidelity.md", "notes/toy-effect.md", "notes/protein-effect.md", "notes/environment.md"):
        assert (ROOT / "docs" / doc).is_file(), doc


def test_report_prints_the_paper_columns_in_a_clone_without_shared(tmp_path):
    """The package copied where no ../shared exists beside it: `python -m cat_experiments.report DIR`
    (no --paper) still prints the paper's rows next to ours."""
    import os
    import shutil
    import subprocess
    import sys

    from test_report_paper import grid, record

    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "cat_experiments", clone / "cat_experiments",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert not (tmp_path / "shared").exists() and not (clone.parent / "shared").exists()
    root = grid(tmp_path / "sweep", [record("math_passn_sft", "pass_at_n", 16)])
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run([sys.executable, "-m", "cat_experiments.report", str(root)], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    md = (root / "paper.md").read_text()
    assert "|  | paper | 14.5 | 30.1 | 40.3 | 50.9 | 59.8 | 66.2 |" in md
    found = subprocess.run([sys.executable, "-c", "import cat_experiments.report as r; print(r.default_paper_path())"],
                           cwd=clone, env=env, capture_output=True, text=True, timeout=120).stdout
    assert found.strip().startswith(str(clone))  # the clone's own copy, not this checkout's
