"""Aggregate run records into one report: ``python -m cat_experiments.report DIR [--out OUTDIR]``.

Reads every ``results.json`` under ``DIR`` (a Hydra multirun dir with numbered job subdirs, or a single
run dir) -- records only, never models -- and builds one row per branch label:

- branch ``"warmup"``   -> ``"warmup (CE, stopped)"``
- branch ``"standard"`` -> ``"standard"``
- branch ``"cat"``      -> ``"{strategy}(N={target_n})"`` (just ``"standard"`` for the standard strategy)
- any other branch keeps its name.

When the records span several experiments the label is prefixed with ``"{experiment}: "``; when they
span several objectives (sft / rl) the trained rows get a ``" [{objective}]"`` suffix, so different
set-ups are never merged. Rows with the same label are merged across jobs and seeds: per metric and
budget the mean over seeds, the sample standard deviation (ddof=1; empty for one seed) and the number of
seeds. The same label and seed seen in several jobs (e.g. the shared warmup in every job of a grid)
counts once (its values are averaged, normally they are identical).

Writes ``report.csv`` (label, metric, budget, mean, std, n_seeds), ``report.md`` (a table per metric:
labels x budgets, "mean ± std"; then per-seed tables) and ``report.png`` (the means, std bands) into
``--out`` (default ``DIR``), and prints the markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cat_experiments.tracking import _sorted_metrics, load_results, plot_scaling

__all__ = [
    "Report",
    "branch_label",
    "build_report",
    "find_results",
    "main",
    "render_markdown",
    "write_report",
]

WARMUP_LABEL = "warmup (CE, stopped)"


def find_results(root: str | Path) -> list[Path]:
    """Every ``results.json`` under ``root`` (or ``root`` itself when it is one), sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if root.name == "results.json" else []
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("results.json") if p.is_file())


def branch_label(branch: str, strategy: str | None, target_n: Any) -> str:
    """The report row of a branch (see the module docstring)."""
    if branch == "warmup":
        return WARMUP_LABEL
    if branch == "standard":
        return "standard"
    if branch == "cat":
        if strategy is None or str(strategy) == "standard":
            return "standard"
        return f"{strategy}(N={target_n})"
    return str(branch)


def _label_order(experiment: Any, label: str, strategy: Any, target_n: Any) -> tuple:
    """Display order: per experiment, warmup, then standard, then CAT rows by strategy and N."""
    if label.split(": ", 1)[-1].startswith(WARMUP_LABEL):
        rank, strategy, target_n = 0, "", None
    elif label.split(": ", 1)[-1].startswith("standard"):
        rank, strategy, target_n = 1, "", None
    else:
        rank = 2
    try:
        n = float(target_n)
    except (TypeError, ValueError):
        n = math.inf
    return (str(experiment), rank, str(strategy or ""), n, label)


def _seed_order(seed: Any) -> tuple:
    return (
        (0, seed, "") if isinstance(seed, int | float) and not isinstance(seed, bool) else (1, 0, str(seed))
    )


def _fmt_seed(seed: Any) -> str:
    return "?" if seed is None else str(seed)


@dataclass
class Report:
    """The aggregated numbers. ``stats[label][metric][budget] = (mean, std, n_seeds)``;
    ``per_seed[label][seed][metric][budget] = value``; ``labels`` in display order."""

    root: Path
    sources: list[Path]
    labels: list[str]
    stats: dict[str, dict[str, dict[int, tuple[float, float, int]]]]
    per_seed: dict[str, dict[Any, dict[str, dict[int, float]]]]
    skipped: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return _sorted_metrics({m for curves in self.stats.values() for m in curves})


def build_report(root: str | Path) -> Report:
    """Read and aggregate every record under ``root``; SystemExit naming ``root`` when there is none."""
    root = Path(root)
    paths = find_results(root)
    records: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    for path in paths:
        try:
            records.append((path, load_results(path)))
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            skipped.append(f"{path}: {exc}")
    if not records:
        detail = f" ({len(skipped)} unreadable: {'; '.join(skipped)})" if skipped else ""
        raise SystemExit(f"cat_experiments.report: no results.json found under {root}{detail}")

    experiments = {r.get("experiment") for _, r in records}
    objectives = {r.get("objective") for _, r in records}
    # (label, seed) -> metric -> budget -> [values from each job]
    raw: dict[tuple[str, Any], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    order: dict[str, tuple] = {}
    for _, rec in records:
        strategy, target_n = rec.get("strategy"), rec.get("target_n")
        for branch, curves in rec["branches"].items():
            label = branch_label(branch, strategy, target_n)
            if len(objectives) > 1 and label != WARMUP_LABEL and branch in ("cat", "standard"):
                label = f"{label} [{rec.get('objective')}]"
            if len(experiments) > 1:
                label = f"{rec.get('experiment')}: {label}"
            order.setdefault(label, _label_order(rec.get("experiment"), label, strategy, target_n))
            seed = rec.get("seed")
            for metric, curve in curves.items():
                for budget, value in curve.items():
                    raw[(label, seed)][metric][budget].append(float(value))

    per_seed: dict[str, dict[Any, dict[str, dict[int, float]]]] = defaultdict(dict)
    for (label, seed), metrics in raw.items():
        per_seed[label][seed] = {
            m: {b: sum(vs) / len(vs) for b, vs in sorted(curve.items())} for m, curve in metrics.items()
        }
    stats: dict[str, dict[str, dict[int, tuple[float, float, int]]]] = {}
    for label, seeds in per_seed.items():
        collected: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for curves in seeds.values():
            for metric, curve in curves.items():
                for budget, value in curve.items():
                    collected[metric][budget].append(value)
        stats[label] = {
            metric: {b: _mean_std(vs) for b, vs in sorted(curve.items())}
            for metric, curve in collected.items()
        }
    labels = sorted(stats, key=lambda lab: order[lab])
    per_seed_sorted = {
        lab: dict(sorted(per_seed[lab].items(), key=lambda kv: _seed_order(kv[0]))) for lab in labels
    }
    return Report(root, [p for p, _ in records], labels, stats, per_seed_sorted, skipped)


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f}" if n < 2 or not math.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def render_markdown(report: Report) -> str:
    """The markdown report: a table per metric (labels x budgets, mean ± std, seeds), then per seed."""
    lines = [
        f"# CAT report: {report.root}",
        "",
        f"{len(report.sources)} run record(s). Cells: mean ± sample std over seeds (just the mean for one seed).",
        "",
    ]
    if report.skipped:
        lines += [f"Skipped {len(report.skipped)} unreadable record(s): " + "; ".join(report.skipped), ""]
    for metric in report.metrics:
        budgets = sorted({b for lab in report.labels for b in report.stats[lab].get(metric, {})})
        lines += [f"## {metric}", ""]
        lines.append("| label | " + " | ".join(f"k={b}" for b in budgets) + " | seeds |")
        lines.append("|---|" + "---:|" * len(budgets) + "---:|")
        for lab in report.labels:
            curve = report.stats[lab].get(metric)
            if not curve:
                continue
            cells = [_cell(*curve[b]) if b in curve else "" for b in budgets]
            n = max(s[2] for s in curve.values())
            lines.append(f"| {lab} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    lines += ["## Per seed", ""]
    for metric in report.metrics:
        budgets = sorted({b for lab in report.labels for b in report.stats[lab].get(metric, {})})
        lines += [f"### {metric}", ""]
        lines.append("| label | seed | " + " | ".join(f"k={b}" for b in budgets) + " |")
        lines.append("|---|---:|" + "---:|" * len(budgets))
        for lab in report.labels:
            for seed, curves in report.per_seed[lab].items():
                curve = curves.get(metric)
                if not curve:
                    continue
                cells = [f"{curve[b]:.3f}" if b in curve else "" for b in budgets]
                lines.append(f"| {lab} | {_fmt_seed(seed)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write report.csv, report.md and report.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "report.csv", "md": out / "report.md", "png": out / "report.png"}
    with open(paths["csv"], "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["label", "metric", "budget", "mean", "std", "n_seeds"])
        for lab in report.labels:
            for metric in _sorted_metrics(report.stats[lab]):
                for budget, (mean, std, n) in report.stats[lab][metric].items():
                    w.writerow([lab, metric, budget, repr(mean), repr(std) if math.isfinite(std) else "", n])
    paths["md"].write_text(render_markdown(report) + "\n", encoding="utf-8")
    means = {
        lab: {m: {b: s[0] for b, s in c.items()} for m, c in report.stats[lab].items()}
        for lab in report.labels
    }
    stds = {
        lab: {m: {b: s[1] for b, s in c.items()} for m, c in report.stats[lab].items()}
        for lab in report.labels
    }
    plot_scaling(means, paths["png"], f"CAT report: {report.root.name or report.root}", errors=stds)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cat_experiments.report",
        description="Aggregate results.json records (a run dir or a Hydra multirun dir) into report.{md,csv,png}.",
    )
    parser.add_argument("dir", type=Path, help="a run dir or a multirun dir holding results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    args = parser.parse_args(argv)
    report = build_report(args.dir)
    out = args.out if args.out is not None else (args.dir if args.dir.is_dir() else args.dir.parent)
    paths = write_report(report, out)
    sys.stdout.write(paths["md"].read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
