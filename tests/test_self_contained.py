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
