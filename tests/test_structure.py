"""The package's import graph: no cycle, and data flows one way.

config -> tasks, strategies, estimators -> models, cache, sampling -> training -> pipeline -> plan, records
-> report, main. Imports are read with ast (module level and inside functions alike), so a lazy import
cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cat_experiments"

# A module may import from its own layer or a lower one (prefixes of the dotted name under the package).
LAYERS = [
    {"config", "distributed", "hub", "strategies.registry"},  # the registry: a pure-Python table config reads
    {"strategies", "tasks", "voting", "evaluation._checks", "evaluation.estimators", "evaluation.majority_vote",
     "evaluation.monte_carlo"},
    {"models", "cache", "evaluation.sampling", "evaluation.sweep", "evaluation.engines", "evaluation"},
    {"training"},
    {"pipeline"},
    {"plan", "records", "costs"},
    {"report", "main", "regrade"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return name == "" or (PKG / Path(*name.split(".")) / "__init__.py").exists()


def imports_of(name: str, typing_too: bool = False) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level external packages) that module ``name`` imports anywhere
    (module level or inside a function), except under ``if TYPE_CHECKING:`` unless ``typing_too``."""
    tree = ast.parse(MODULES[name].read_text())
    here = name.split(".") if _is_package(name) else name.split(".")[:-1]
    internal, external = set(), set()
    typing_only = set() if typing_too else {
        id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
        and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in block.body for n in ast.walk(stmt)}

    def add(target: str) -> None:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            internal.add(target)

    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never executed
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cat_experiments."):
                    add(alias.name.removeprefix("cat_experiments."))
                elif alias.name != "cat_experiments":
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base_name = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "cat_experiments":
                base_name = node.module.removeprefix("cat_experiments").lstrip(".")
            else:
                external.add((node.module or "").split(".")[0])
                continue
            for alias in node.names:  # `from . import records` imports a module, not a name
                sub = f"{base_name}.{alias.name}" if base_name else alias.name
                add(sub if sub in MODULES else base_name)
    return internal, external


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def _layer(name: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise AssertionError(f"module cat_experiments.{name} is in no layer of tests/test_structure.py: add it")
    return best[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_checker_sees_cycles_and_relative_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    internal, external = imports_of("pipeline")
    assert {"cache", "config", "models", "training.args"} <= internal and "torch" in external
    assert "evaluation.store" in imports_of("records.proteins")[0]  # `from ..evaluation.store import SampleStore`
    assert "pipeline" in imports_of("regrade")[0]  # a function-level `from .pipeline import Pipeline`


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_flows_one_way():
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
           for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("strategies")))
def test_strategies_import_no_trainer_task_or_model(name):
    internal, external = imports_of(name)
    assert not {m for m in internal if m.split(".")[0] in ("training", "tasks", "models", "pipeline")}
    assert not external & {"trl", "transformers", "peft"}


def test_estimators_are_pure_numpy():
    """estimators.py and everything it imports from the package: numpy and the standard library only."""
    seen, todo = set(), ["evaluation.estimators"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        internal, external = imports_of(name)
        assert not external & {"torch", "transformers", "trl", "peft", "datasets"}, (name, external)
        assert not {m for m in internal if m.split(".")[0] in ("training", "models", "pipeline")}, (name, internal)
        todo.extend(internal)
    assert "evaluation.majority_vote" in seen


def test_no_module_is_a_mixed_room():
    """About 450 lines at most, the MATH graders excepted (issue 9)."""
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: c for n, c in long.items() if c > 460 and n != "tasks.math_grading"} == {}


def test_no_import_cycle_in_records_even_for_types():
    """records/ has no circle even counting the imports made for annotations only (issue 23: plots.py
    imported paper.py's PaperTable for a type while paper.py imports grid.py, which imports plots.py)."""
    graph = {n: {m for m in imports_of(n, typing_too=True)[0] if m.startswith("records")}
             for n in MODULES if n.startswith("records")}
    assert find_cycle({"records.a": {"records.b"}, "records.b": {"records.a"}}) is not None
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in records/: " + " -> ".join(cycle)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(name: str) -> list[str]:
    """Private names (a leading underscore) that module ``name`` takes from another module of the package:
    ``from .x import _y``, and ``x._y`` where ``x`` is a module of the package bound by an import."""
    tree = ast.parse(MODULES[name].read_text())
    here = name.split(".") if _is_package(name) else name.split(".")[:-1]
    bad, module_aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base_name = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "cat_experiments":
                base_name = node.module.removeprefix("cat_experiments").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{base_name}.{alias.name}" if base_name else alias.name
                if sub in MODULES:
                    module_aliases.add(alias.asname or alias.name)
                elif _private(alias.name):
                    bad.append(f"line {node.lineno}: from {base_name or 'cat_experiments'} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cat_experiments.") and alias.asname:
                    module_aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and _private(node.attr)):
            bad.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_the_private_name_checker_sees_both_forms(tmp_path, monkeypatch):
    (tmp_path / "probe.py").write_text("from .records import plots\nfrom .strategies.pass_at_n import _n\n"
                                       "from ._mod import public\nplots._save(1)\n")
    monkeypatch.setitem(MODULES, "probe", tmp_path / "probe.py")
    assert private_uses("probe") == ["line 2: from strategies.pass_at_n import _n", "line 4: plots._save"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_crosses_modules(name):
    """A name with a leading underscore stays in its module (issue 23): what another module needs is public
    (the helper modules _io, _checks and _numerics are private to their packages, their names are not)."""
    assert private_uses(name) == [], f"cat_experiments.{name} uses private names of other modules"
