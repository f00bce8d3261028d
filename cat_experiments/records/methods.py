"""The methods comparison (``python -m cat_experiments.report methods SWEEP_DIR``): one table of every RL
method of a sweep (conf/experiment/methods.yaml) beside standard GRPO, paired by seed.

A record (``results.json``, results.py) holds the warmup, the standard branch and the method's own branch
(``"cat"``; ``"standard"`` for the standard strategy) of one seed. A record's method is read from its
config (:func:`method_of`: the strategy, its RL estimator, N and k), so the report needs no sweep
bookkeeping. Per method:

- its *target*: pass@N for the pass@k family (pass_at_n with any estimator), maj@N for the majority
  methods, max@N for best-of-N (pass@N when the record has no max@k, as on a 0/1 reward);
- its value at every budget of the target metric (the mean over seeds);
- the paired gain over standard at the target: per seed, the method's value minus the standard branch
  *of the same record* (so a method whose objective settings differ, e.g. an all-wrong penalty, is
  compared with the standard run under the same settings), then the mean and its standard error
  (sample std / sqrt(seeds), :func:`paired`); only seeds present on both sides count, the rest are named;
- the pass@1 tax: the method's pass@1 minus standard's, paired the same way;
- the test-time scaling efficiency (as MaxRL, arXiv 2602.02710, reports it): how many samples standard
  needs to reach the method's value at its target, read off standard's exact curve (the mean over the
  paired seeds) and interpolated linearly in log k between the two budgets around the crossing
  (:func:`samples_to_reach`), divided by N. ``>64/8`` when standard never reaches it within its largest
  budget; ``<=1/8`` when standard's k = 1 already does.

methods_plot.py writes ``methods.md``, ``methods.csv`` and ``methods.png`` (every method's curve of its target
metric and its paired difference from standard).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import metric_budget_name
from .results import load_results

__all__ = [
    "ESTIMATOR_NAMES", "MethodKey", "MethodRow", "MethodsTable", "Paired", "Reach", "build_methods_table",
    "collect_methods", "efficiency_text", "gain_curve", "method_of", "paired", "render_methods_markdown",
    "samples_to_reach",
]

STANDARD = "standard GRPO"
# (strategy, strategy.estimator) -> the method's name in the table
ESTIMATOR_NAMES: dict[tuple[str, str], str] = {
    ("pass_at_n", "surrogate"): "CAT Pass@N",
    ("pass_at_n", "pkpo"): "PKPO pass@k",
    ("pass_at_n", "maxrl"): "MaxRL",
    ("pass_at_n", "maxrl_no_baseline"): "MaxRL no-baseline",
    ("pass_at_n", "best_sample"): "best-sample",
    ("pass_at_n", "passk_training"): "Pass@k Training",
    ("majority", "surrogate"): "majority CAT",
    ("majority", "loo"): "majority LOO",
    ("best_of_n", "surrogate"): "best-of-N CAT",
    ("best_of_n", "pkpo"): "PKPO max@k",
}
# the test-time metric a strategy aims at
TARGET_METRIC = {"pass_at_n": "pass@k", "majority": "maj@k", "best_of_n": "max@k", "standard": "pass@k"}


@dataclass(frozen=True)
class MethodKey:
    """What tells methods apart: the table label, the target metric and N."""

    label: str
    metric: str
    n: int
    strategy: str
    estimator: str | None = None


def method_of(rec: Mapping[str, Any]) -> MethodKey:
    """The method of a record, from its strategy config (``config.strategy``) and top-level fields."""
    strategy = str(rec.get("strategy"))
    cfg = rec.get("config")
    s = cfg.get("strategy", {}) if isinstance(cfg, dict) else {}
    s = s if isinstance(s, dict) else {}
    n = int(rec.get("target_n", s.get("n", 1)) or 1)
    if strategy == "standard":
        return MethodKey(STANDARD, "pass@k", 1, "standard")
    estimator = str(s.get("estimator") or "surrogate")
    name = ESTIMATOR_NAMES.get((strategy, estimator), f"{strategy}/{estimator}")
    extra = []
    if strategy == "majority" and estimator == "surrogate":
        k = rec.get("strategy_k", s.get("k"))
        extra.append("dynamic k" if k is None else f"k={k}")
    if strategy == "pass_at_n" and estimator == "surrogate" and s.get("p_estimator", "sequence") != "sequence":
        extra.append(f"p {s.get('p_estimator')}")
    metric = TARGET_METRIC.get(strategy, "pass@k")
    if metric not in rec.get("branches", {}).get("cat", {metric: None}):
        metric = "pass@k"  # max@N on a 0/1 reward is pass@N, which the task reports instead
    label = f"{name} ({', '.join([f'N={n}', *extra])})"
    return MethodKey(label, metric, n, strategy, estimator)


@dataclass(frozen=True)
class Paired:
    """Mean and standard error of paired differences over the seeds both sides have."""

    mean: float
    se: float
    n: int
    wins: int
    seeds: tuple
    missing: tuple  # seeds one side lacks
    diffs: tuple = ()


def _seed_key(seed: Any) -> tuple:
    return (0, seed, "") if isinstance(seed, int | float) and not isinstance(seed, bool) else (1, 0, str(seed))


def paired(method: Mapping[Any, float], base: Mapping[Any, float]) -> Paired:
    """Paired differences ``method[s] - base[s]`` over the seeds in both (NaN values drop the seed); mean,
    standard error (sample std with ddof=1 / sqrt(n); NaN for fewer than 2 seeds), wins (> 0), and the
    seeds only one side has."""
    both = sorted((s for s in method if s in base and math.isfinite(method[s]) and math.isfinite(base[s])),
                  key=_seed_key)
    missing = tuple(sorted((set(method) | set(base)) - set(both), key=_seed_key))
    diffs = [method[s] - base[s] for s in both]
    n = len(diffs)
    if n == 0:
        return Paired(float("nan"), float("nan"), 0, 0, (), missing)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else float("nan")
    return Paired(mean, se, n, sum(d > 0 for d in diffs), tuple(both), missing, tuple(diffs))


@dataclass(frozen=True)
class Reach:
    """Samples a curve needs to reach a value: ``k`` with ``bound`` "exact" (interpolated), "at_most" (the
    smallest budget already reaches it) or "beyond" (the largest budget does not; ``k`` is that budget)."""

    k: float
    bound: str


def samples_to_reach(curve: Mapping[int, float], value: float) -> Reach:
    """The budget at which ``curve`` (budget -> value) first reaches ``value``, linear in log k between the
    last budget below it and the first at or above it."""
    points = sorted((int(k), float(v)) for k, v in curve.items() if math.isfinite(float(v)))
    if not points:
        raise ValueError("samples_to_reach: empty curve")
    if not math.isfinite(value):
        raise ValueError(f"samples_to_reach: value must be finite, got {value}")
    if points[0][1] >= value:
        return Reach(float(points[0][0]), "at_most")
    for (k0, y0), (k1, y1) in zip(points, points[1:], strict=False):
        if y1 >= value:
            t = (value - y0) / (y1 - y0)  # y1 >= value > y0, so y1 > y0
            return Reach(math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0))), "exact")
    return Reach(float(points[-1][0]), "beyond")


def efficiency_text(reach: Reach, n: int) -> str:
    """The efficiency ``k / N`` as text: ``"2.4x"``, ``">8x"`` (beyond the largest budget, its k / N) or
    ``"<=0.12x"`` (standard's smallest budget already reaches it)."""
    ratio = reach.k / n
    text = f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"
    return {"exact": text, "beyond": f">{text}", "at_most": f"<={text}"}[reach.bound]


def _samples_text(reach: Reach) -> str:
    return {"exact": f"{reach.k:.1f}", "beyond": f">{reach.k:g} (max budget)", "at_most": f"<={reach.k:g}"}[reach.bound]


@dataclass
class MethodRow:
    """One method: per seed its own branch's and its record's standard branch's curves."""

    key: MethodKey
    curves: dict[Any, dict[str, dict[int, float]]] = field(default_factory=dict)      # seed -> metric -> budget
    standard: dict[Any, dict[str, dict[int, float]]] = field(default_factory=dict)    # the paired standard
    warmup: dict[Any, dict[str, dict[int, float]]] = field(default_factory=dict)
    duplicates: int = 0

    def at(self, which: str, metric: str, budget: int) -> dict[Any, float]:
        """seed -> value of ``which`` ("method", "standard", "warmup") at ``metric`` and ``budget``."""
        src = {"method": self.curves, "standard": self.standard, "warmup": self.warmup}[which]
        return {s: c[metric][budget] for s, c in src.items() if budget in c.get(metric, {})}

    def mean_curve(self, which: str, metric: str, seeds: Iterable[Any] | None = None) -> dict[int, float]:
        src = {"method": self.curves, "standard": self.standard, "warmup": self.warmup}[which]
        keep = set(src) if seeds is None else set(seeds) & set(src)
        collected: dict[int, list[float]] = defaultdict(list)
        for s in keep:
            for b, v in src[s].get(metric, {}).items():
                collected[b].append(v)
        return {b: sum(vs) / len(vs) for b, vs in sorted(collected.items())}


def _merge(into: dict[Any, dict[str, dict[int, float]]], seed: Any, curves: Mapping[str, Mapping[int, float]],
           counts: dict[Any, int]) -> bool:
    """Add one record's curves for ``seed``; several records of one seed are averaged. True if a duplicate."""
    counts[seed] = counts.get(seed, 0) + 1
    c = counts[seed]
    if c == 1:
        into[seed] = {m: dict(curve) for m, curve in curves.items()}
        return False
    for m, curve in curves.items():
        old = into[seed].setdefault(m, {})
        for b, v in curve.items():
            old[b] = old[b] + (v - old[b]) / c if b in old else v
    return True


def collect_methods(records: Sequence[Mapping[str, Any]]) -> list[MethodRow]:
    """Group records by method (:func:`method_of`). A record of the standard strategy gives the standard
    row; its ``"standard"`` branch is its own pair. A method record without a standard branch
    (baseline=false) is paired with the standard row's seed when there is one."""
    rows: dict[MethodKey, MethodRow] = {}
    counts: dict[tuple[MethodKey, str], dict[Any, int]] = defaultdict(dict)
    for rec in records:
        key = method_of(rec)
        row = rows.setdefault(key, MethodRow(key))
        seed = rec.get("seed")
        branches = rec.get("branches", {})
        own = branches.get("standard" if key.strategy == "standard" else "cat")
        if own is None:
            continue
        row.duplicates += _merge(row.curves, seed, own, counts[(key, "method")])
        if "standard" in branches:
            _merge(row.standard, seed, branches["standard"], counts[(key, "standard")])
        if "warmup" in branches:
            _merge(row.warmup, seed, branches["warmup"], counts[(key, "warmup")])
    std = next((r for k, r in rows.items() if k.strategy == "standard"), None)
    if std is not None:
        for row in rows.values():
            for seed, curves in std.curves.items():
                row.standard.setdefault(seed, curves)
    return sorted(rows.values(), key=lambda r: (r.key.strategy != "standard", r.key.metric != "pass@k",
                                                  list(ESTIMATOR_NAMES).index((r.key.strategy, r.key.estimator))
                                                  if (r.key.strategy, r.key.estimator) in ESTIMATOR_NAMES else 99,
                                                  r.key.label))


@dataclass
class MethodsTable:
    """Everything the report prints: per method its line (:meth:`line`) and the rows' data."""

    rows: list[MethodRow]
    budgets: list[int]
    sources: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def standard_row(self) -> MethodRow | None:
        """The standard strategy's records; without any, the standard branches the methods' records carry."""
        found = next((r for r in self.rows if r.key.strategy == "standard"), None)
        if found is not None or not any(r.standard for r in self.rows):
            return found
        row = MethodRow(MethodKey(STANDARD, "pass@k", 1, "standard"))
        for r in self.rows:
            for seed, curves in r.standard.items():
                row.curves.setdefault(seed, curves)
        return row

    def line(self, row: MethodRow) -> dict[str, Any]:
        """The numbers of one method's table line."""
        k = row.key
        value = row.at("method", k.metric, k.n)
        gain = paired(value, row.at("standard", k.metric, k.n))
        tax = paired(row.at("method", "pass@k", 1), row.at("standard", "pass@k", 1))
        seeds = gain.seeds or tuple(sorted(value, key=_seed_key))
        std_curve = row.mean_curve("standard", k.metric, seeds)
        mean_value = sum(value[s] for s in seeds) / len(seeds) if seeds else float("nan")
        reach = samples_to_reach(std_curve, mean_value) if std_curve and math.isfinite(mean_value) else None
        per_seed_reach = {}
        for s in gain.seeds:
            curve = row.standard[s].get(k.metric, {})
            if curve:
                per_seed_reach[s] = samples_to_reach(curve, value[s])
        return {"value": value, "mean_value": mean_value, "gain": gain, "tax": tax, "reach": reach,
                "per_seed_reach": per_seed_reach, "curve": row.mean_curve("method", k.metric),
                "pass1": row.mean_curve("method", "pass@k").get(1, float("nan")), "seeds": sorted(row.curves, key=_seed_key)}


def build_methods_table(root: str | Path) -> MethodsTable:
    """Read every ``results.json`` under ``root`` (grid.find_results) into a :class:`MethodsTable`."""
    from .grid import find_results

    root = Path(root)
    records, sources, skipped = [], [], []
    for path in find_results(root):
        try:
            records.append(load_results(path))
            sources.append(path)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            skipped.append(f"{path}: {exc}")
    if not records:
        raise SystemExit(f"cat_experiments.report methods: no results.json found under {root}")
    rows = collect_methods(records)
    budgets = sorted({b for r in rows for c in r.curves.values() for curve in c.values() for b in curve})
    return MethodsTable(rows, budgets, sources, skipped)


def _pm(p: Paired) -> str:
    if p.n == 0:
        return "–"
    se = f" ± {p.se:.3f}" if math.isfinite(p.se) else " (1 seed)"
    return f"{p.mean:+.3f}{se}"


def _f(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "–"


def render_methods_markdown(table: MethodsTable, title: str | None = None) -> str:
    """The table (one line per method, standard first in each metric), then per seed, then the notes."""
    budgets = table.budgets
    std = table.standard_row()
    lines = [f"# {title or 'Methods compared'}", "",
             "Each method at its target (pass@N for the pass@k family, maj@N for majority) and, in the k "
             "columns, its target metric at every budget (mean over seeds). gain: method - standard at the "
             "target, paired by seed, mean ± SE (wins/seeds). tax: pass@1 method - standard, paired. "
             "std needs: samples standard needs to reach the method's value (its exact curve, linear in log k "
             "between budgets); efficiency = that / N (MaxRL's test-time scaling efficiency).", "",
             "| method | target | value | gain vs standard | wins | pass@1 | pass@1 tax | std needs | efficiency | "
             + " | ".join(f"k={b}" for b in budgets) + " | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(budgets) + "---|"]
    if std is not None:
        for metric in sorted({r.key.metric for r in table.rows}, key=lambda m: m != "pass@k"):
            curve = std.mean_curve("method", metric)
            if not curve:
                continue
            seeds = sorted(std.curves, key=_seed_key)
            lines.append(f"| {STANDARD} | {metric} | | | | {_f(std.mean_curve('method', 'pass@k').get(1, math.nan))} "
                         "| | | | " + " | ".join(_f(curve.get(b, math.nan)) for b in budgets)
                         + f" | {', '.join(map(str, seeds))} |")
    for row in table.rows:
        if row.key.strategy == "standard":
            continue
        info = table.line(row)
        k, g = row.key, info["gain"]
        reach = info["reach"]
        seeds = ", ".join(map(str, info["seeds"]))
        if g.missing:
            seeds += f" (unpaired: {', '.join(map(str, g.missing))})"
        lines.append(
            f"| {k.label} | {metric_budget_name(k.metric, k.n)} | {_f(info['mean_value'])} | {_pm(g)} | "
            f"{g.wins}/{g.n} | {_f(info['pass1'])} | {_pm(info['tax'])} | "
            f"{_samples_text(reach) if reach else '–'} | {efficiency_text(reach, k.n) if reach else '–'} | "
            + " | ".join(_f(info["curve"].get(b, math.nan)) for b in budgets) + f" | {seeds} |")
    lines += ["", "## Per seed", "",
              "| method | target | seed | method | standard | gain | pass@1 method / standard | std needs | efficiency |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table.rows:
        if row.key.strategy == "standard":
            continue
        k, info = row.key, table.line(row)
        for s in info["gain"].seeds:
            m, b = row.curves[s][k.metric][k.n], row.standard[s][k.metric][k.n]
            p1m = row.curves[s].get("pass@k", {}).get(1, math.nan)
            p1s = row.standard[s].get("pass@k", {}).get(1, math.nan)
            r = info["per_seed_reach"].get(s)
            lines.append(f"| {k.label} | {metric_budget_name(k.metric, k.n)} | {s} | {_f(m)} | {_f(b)} | {m - b:+.3f} | "
                         f"{_f(p1m)} / {_f(p1s)} | {_samples_text(r) if r else '–'} | "
                         f"{efficiency_text(r, k.n) if r else '–'} |")
    warm = next((r for r in table.rows if r.warmup), None)
    notes = []
    if warm is not None:
        cells = []
        for metric, b in (("pass@k", 1), ("pass@k", 8), ("maj@k", 8)):
            v = warm.mean_curve("warmup", metric).get(b)
            if v is not None:
                cells.append(f"{metric_budget_name(metric, b)} {v:.3f}")
        notes.append(f"Warmup control (the branches' start, mean over seeds): {', '.join(cells)}.")
    dup = [r.key.label for r in table.rows if r.duplicates]
    if dup:
        notes.append(f"Several records of one seed were averaged for: {', '.join(dup)}.")
    if table.skipped:
        notes.append(f"Skipped {len(table.skipped)} unreadable record(s): {'; '.join(table.skipped)}.")
    notes.append(f"{len(table.sources)} record(s).")
    return "\n".join([*lines, "", *notes, ""])


def gain_curve(row: MethodRow, metric: str) -> dict[int, float]:
    """Per budget, the mean over paired seeds of the method's value minus its record's standard branch."""
    budgets = sorted({b for c in row.curves.values() for b in c.get(metric, {})})
    out = {}
    for b in budgets:
        p = paired(row.at("method", metric, b), row.at("standard", metric, b))
        if p.n:
            out[b] = p.mean
    return out
