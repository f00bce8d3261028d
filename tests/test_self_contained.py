"""A user's clone has no ../shared: the package and its configs must not point there."""

from __future__ import annotations

from conftest import ROOT


def test_package_and_configs_never_mention_shared():
    offenders = []
    for folder in ("cat_experiments", "conf"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".json", ".md", ".txt"):
                for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if "shared/" in line:
                        offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "point these at docs/ instead of shared/:\n" + "\n".join(offenders)


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
