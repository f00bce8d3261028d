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

When the CAT branches of one experiment differ in the majority threshold k or (RL) in the weight form,
the CAT label gets a ``" [k=3]"`` / ``" [raw]"`` suffix so that such variants are never merged.

Writes ``report.csv`` (label, metric, budget, mean, std, n_seeds), ``report.md`` (a table per metric:
labels x budgets, "mean ± std"; then per-seed tables) and ``report.png`` (the means, std bands) into
``--out`` (default ``DIR``), and prints the markdown.

Beside the paper. When an experiment of the records is one of the paper's (``PAPER_KEYS``: the MATH
and protein presets), the report also renders that grid in the paper's table shape -- rows = branches
(``standard``, ``pass@16``, ``maj@8,k=3``, ``bon-4``, ...), columns = the paper's budgets -- with the
paper's row printed under each of ours (MATH in percent), into ``paper.md`` (also appended to
``report.md``), ``paper.csv`` and ``paper.png`` (ours solid, the paper dashed). The paper's numbers
come from ``--paper PATH``, by default the copy shipped with the package (``cat_experiments/data/paper_results.json``)
(``--no-paper`` skips this). ``--wandb`` logs the tables and plots to a W&B run (offline without a key
or network; ``--wandb-mode``/``--wandb-project``).
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

from cat_experiments.tracking import _atomic_write, _sorted_metrics, init_wandb, load_results, plot_scaling

__all__ = [
    "PAPER_KEYS",
    "PaperTable",
    "Report",
    "branch_label",
    "build_report",
    "default_paper_path",
    "find_results",
    "load_paper",
    "log_report_wandb",
    "main",
    "paper_row_name",
    "paper_tables",
    "render_markdown",
    "render_paper_markdown",
    "write_paper_tables",
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
    # label -> what the row is: experiment, branch, strategy, n, k, weight_form, objective, task
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    # CAT variants that share a "{strategy}(N=..)" label: majority k, RL weight form
    variants: dict[tuple, set[tuple]] = defaultdict(set)
    for _, rec in records:
        if "cat" in rec["branches"]:
            variants[_variant_group(rec)].add(_variant(rec))
    meta: dict[str, dict[str, Any]] = {}
    # (label, seed) -> metric -> budget -> [values from each job]
    raw: dict[tuple[str, Any], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    order: dict[str, tuple] = {}
    for _, rec in records:
        strategy, target_n = rec.get("strategy"), rec.get("target_n")
        for branch, curves in rec["branches"].items():
            label = branch_label(branch, strategy, target_n)
            if branch == "cat":
                label += _variant_suffix(_variant(rec), variants[_variant_group(rec)])
            if len(objectives) > 1 and label != WARMUP_LABEL and branch in ("cat", "standard"):
                label = f"{label} [{rec.get('objective')}]"
            if len(experiments) > 1:
                label = f"{rec.get('experiment')}: {label}"
            order.setdefault(label, _label_order(rec.get("experiment"), label, strategy, target_n))
            meta.setdefault(label, _row_meta(rec, branch))
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
    return Report(
        root,
        [p for p, _ in records],
        labels,
        stats,
        per_seed_sorted,
        skipped,
        {lab: meta[lab] for lab in labels},
    )


def _strategy_cfg(rec: dict[str, Any]) -> dict[str, Any]:
    cfg = rec.get("config")
    strategy = cfg.get("strategy") if isinstance(cfg, dict) else None
    return strategy if isinstance(strategy, dict) else {}


def _variant_group(rec: dict[str, Any]) -> tuple:
    return (rec.get("experiment"), rec.get("objective"), rec.get("strategy"), rec.get("target_n"))


def _variant(rec: dict[str, Any]) -> tuple:
    """What tells apart CAT runs with the same strategy and N: (k, weight form). The weight form only
    matters for RL (SFT always uses p S'(p)/S(p))."""
    s = _strategy_cfg(rec)
    k = rec.get("strategy_k", s.get("k")) if rec.get("strategy") == "majority" else None
    form = s.get("weight_form") if rec.get("objective") == "rl" else None
    return (k, form)


def _variant_suffix(variant: tuple, seen: set[tuple]) -> str:
    if len(seen) < 2:
        return ""
    k, form = variant
    parts = []
    if len({v[0] for v in seen}) > 1:
        parts.append("k=dynamic" if k is None else f"k={k}")
    if len({v[1] for v in seen}) > 1 and form is not None:
        parts.append(str(form))
    return f" [{', '.join(parts)}]" if parts else ""


def _row_meta(rec: dict[str, Any], branch: str) -> dict[str, Any]:
    info = {
        "experiment": rec.get("experiment"),
        "branch": branch,
        "objective": rec.get("objective"),
        "task": rec.get("task"),
    }
    if branch == "cat":
        k, form = _variant(rec)
        info.update(
            strategy=rec.get("strategy"),
            n=rec.get("target_n"),
            k=k,
            weight_form=_strategy_cfg(rec).get("weight_form") if rec.get("objective") == "rl" else None,
        )
    elif branch == "standard":
        info.update(strategy="standard", n=1, k=None, weight_form=None)
    else:
        info.update(strategy=None, n=None, k=None, weight_form=None)
    return info


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


# ----------------------------------------------------------------------------- beside the paper

#: Our experiment name -> the table key in paper_results.json.
PAPER_KEYS: dict[str, str] = {
    "math_passn_sft": "math_passn_sft",
    "math_majority_sft": "math_majority_sft",
    "math_passn_rl": "math_passn_rl",
    "math_majority_rl": "math_majority_rl",
    "protein_unconditional": "protein_unconditional",
    "protein_conditional": "protein_conditional",
}
#: The weight form of the paper's main RL rows; the other form is the paper's ablation ("pass@4 (raw)").
PAPER_MAIN_WEIGHT_FORM: dict[str, str] = {"math_passn_rl": "log", "math_majority_rl": "raw"}
_PAPER_METRICS = {"pass@k": "pass@k", "maj@k": "maj@k", "expected max reward": "max@k", "max@k": "max@k"}


def default_paper_path() -> Path:
    """The paper's reported table means, shipped with the package (``cat_experiments/data/``), so a
    user's clone prints them with nothing beside it."""
    return Path(__file__).resolve().parent / "data" / "paper_results.json"


def load_paper(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@dataclass
class PaperRow:
    name: str  # the paper's row name (standard, pass@16, maj@8,k=3, bon-4) or our label
    ours: list[tuple[float, float, int] | None] | None  # per column (mean, std, n_seeds), scaled
    paper: list[float | None] | None  # per column, as printed in the paper


@dataclass
class PaperTable:
    """One experiment in the shape of the paper's table: rows = branches, columns = the paper's budgets."""

    experiment: str
    key: str
    description: str
    columns: list[tuple[str, str, int]]  # (header, our metric, budget)
    unit: str  # "%" or ""
    rows: list[PaperRow]


def paper_row_name(meta: dict[str, Any], key: str | None = None) -> str | None:
    """The paper's name for one of our rows (None for rows the paper has no counterpart of, e.g. warmup)."""
    strategy, n = meta.get("strategy"), meta.get("n")
    if strategy == "standard":
        return "standard"
    if strategy is None or n is None:
        return None
    if strategy == "pass_at_n":
        name = f"pass@{n}"
    elif strategy == "majority":
        name = f"maj@{n}" if meta.get("k") is None else f"maj@{n},k={meta['k']}"
    elif strategy == "best_of_n":
        name = f"bon-{n}"
    else:
        name = f"{strategy}@{n}"
    main_form = PAPER_MAIN_WEIGHT_FORM.get(key or "")
    form = meta.get("weight_form")
    if main_form and form and form != main_form:
        name += f" ({form})"
    return name


def _paper_columns(table: dict[str, Any]) -> tuple[list[tuple[str, str, int]], str]:
    budgets = [int(b) for b in table.get("k", table.get("n", []))]
    metric = table.get("metric")
    if isinstance(metric, list):  # e.g. ["pass@1", "maj@4", "maj@8", "maj@16"]
        cols = []
        for name in metric:
            head, _, budget = str(name).partition("@")
            cols.append((str(name), f"{head}@k", int(budget)))
        return cols, ", ".join(map(str, metric))
    ours = _PAPER_METRICS.get(str(metric), str(metric))
    head = ours[:-2] if ours.endswith("@k") else ours
    return [(f"{head}@{b}", ours, b) for b in budgets], str(metric)


def paper_tables(report: Report, paper: dict[str, Any], key: str | None = None) -> list[PaperTable]:
    """The report's experiments that the paper has (PAPER_KEYS, or ``key`` for every experiment)."""
    by_experiment: dict[str, list[str]] = defaultdict(list)
    for lab in report.labels:
        by_experiment[str(report.meta.get(lab, {}).get("experiment"))].append(lab)
    tables = []
    for experiment, labels in by_experiment.items():
        pkey = key or PAPER_KEYS.get(experiment) or (experiment if experiment in paper else None)
        if not pkey or not isinstance(paper.get(pkey), dict):
            continue
        ptable = paper[pkey]
        columns, metric_desc = _paper_columns(ptable)
        percent = all(metric in ("pass@k", "maj@k") for _, metric, _ in columns)
        scale = 100.0 if percent else 1.0
        prows: dict[str, list[float | None]] = {
            str(name): [None if v is None else float(v) for v in values]
            for name, values in ptable.get("rows", {}).items()
        }
        rows: list[PaperRow] = []
        used: set[str] = set()
        for lab in labels:
            stats = report.stats[lab]
            ours = []
            for _, metric, budget in columns:
                cell = stats.get(metric, {}).get(budget)
                ours.append(None if cell is None else (cell[0] * scale, cell[1] * scale, cell[2]))
            if all(c is None for c in ours):
                continue
            name = paper_row_name(report.meta.get(lab, {}), pkey)
            paper_values = prows.get(name) if name else None
            if name in prows:
                used.add(name)
            rows.append(PaperRow(name or lab.split(": ", 1)[-1], ours, paper_values))
        for name, values in prows.items():  # the paper's rows we have not run
            if name not in used:
                rows.append(PaperRow(name, None, values))
        description = f"paper table `{pkey}`: {metric_desc}" + (", in %" if percent else "")
        tables.append(PaperTable(experiment, pkey, description, columns, "%" if percent else "", rows))
    return tables


def _paper_cell(cell: tuple[float, float, int] | float | None, unit: str) -> str:
    if cell is None:
        return ""
    digits = 1 if unit == "%" else 2
    if isinstance(cell, tuple):
        mean, std, n = cell
        if n >= 2 and math.isfinite(std):
            return f"{mean:.{digits}f} ± {std:.{digits}f}"
        return f"{mean:.{digits}f}"
    return f"{cell:.{digits}f}"


def render_paper_markdown(tables: Sequence[PaperTable], paper_path: str | Path | None = None) -> str:
    """Each table: a row of ours (mean ± std over seeds) and, under it, the paper's row."""
    lines: list[str] = []
    for t in tables:
        lines += [f"## Beside the paper: {t.experiment} ({t.description})", ""]
        lines.append("| branch | source | " + " | ".join(h for h, _, _ in t.columns) + " |")
        lines.append("|---|---|" + "---:|" * len(t.columns))
        for row in t.rows:
            if row.ours is not None:
                lines.append(
                    f"| {row.name} | ours | " + " | ".join(_paper_cell(c, t.unit) for c in row.ours) + " |"
                )
            if row.paper is not None:
                first = "" if row.ours is not None else row.name
                lines.append(
                    f"| {first} | paper | " + " | ".join(_paper_cell(c, t.unit) for c in row.paper) + " |"
                )
        lines.append("")
    if tables and paper_path is not None:
        lines += [f"Paper numbers: {paper_path}", ""]
    return "\n".join(lines)


def write_paper_tables(
    tables: Sequence[PaperTable], out: str | Path, paper_path: str | Path | None = None
) -> dict[str, Path]:
    """paper.md, paper.csv (experiment, paper_key, branch, source, metric, budget, value, std, n_seeds)
    and paper.png (one panel per table: ours solid, the paper dashed) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"paper_md": out / "paper.md", "paper_csv": out / "paper.csv", "paper_png": out / "paper.png"}
    text = render_paper_markdown(tables, paper_path)
    _atomic_write(paths["paper_md"], lambda fh: fh.write(text + "\n"))

    def _csv(fh):
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            ["experiment", "paper_key", "branch", "source", "metric", "budget", "value", "std", "n_seeds"]
        )
        for t in tables:
            for row in t.rows:
                for i, (_, metric, budget) in enumerate(t.columns):
                    if row.ours is not None and row.ours[i] is not None:
                        mean, std, n = row.ours[i]
                        w.writerow(
                            [
                                t.experiment,
                                t.key,
                                row.name,
                                "ours",
                                metric,
                                budget,
                                repr(mean),
                                repr(std) if math.isfinite(std) else "",
                                n,
                            ]
                        )
                    if row.paper is not None and i < len(row.paper) and row.paper[i] is not None:
                        w.writerow(
                            [
                                t.experiment,
                                t.key,
                                row.name,
                                "paper",
                                metric,
                                budget,
                                repr(row.paper[i]),
                                "",
                                "",
                            ]
                        )

    _atomic_write(paths["paper_csv"], _csv)
    _plot_paper(tables, paths["paper_png"])
    return paths


def _plot_paper(tables: Sequence[PaperTable], path: Path) -> Path:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    n = max(1, len(tables))
    fig = Figure(figsize=(5.6 * n, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, t in zip(axes, tables, strict=False):
        budgets = [b for _, _, b in t.columns]
        for i, row in enumerate(t.rows):
            color = f"C{i % 10}"
            if row.ours is not None:
                pts = [(b, c[0]) for b, c in zip(budgets, row.ours, strict=True) if c is not None]
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        marker="o",
                        markersize=4,
                        color=color,
                        label=f"{row.name} (ours)",
                    )
            if row.paper is not None:
                pts = [(b, v) for b, v in zip(budgets, row.paper, strict=False) if v is not None]
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        linestyle="--",
                        marker="x",
                        markersize=4,
                        color=color,
                        alpha=0.8,
                        label=f"{row.name} (paper)",
                    )
        if budgets and max(budgets) > min(budgets):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(sorted(set(budgets))))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(round(x))}"))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("budget")
        ax.set_ylabel(t.description.split(": ", 1)[-1])
        ax.set_title(f"{t.experiment} vs paper (dashed)", fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    _atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")
    return path


def log_report_wandb(
    report: Report,
    paths: dict[str, Path],
    tables: Sequence[PaperTable],
    *,
    project: str = "cat-experiments",
    mode: str = "auto",
    entity: str | None = None,
):
    """Log the report to a W&B run of its own (job_type report): the aggregated table, the paper
    comparison as a table and ``paper/{experiment}/{branch}/{column}`` summaries, and the plots.
    Offline without an API key or network (see tracking.resolve_wandb_mode). Returns the finished run
    (None when disabled)."""
    experiments = sorted({str(m.get("experiment")) for m in report.meta.values()})
    run = init_wandb(
        {
            "project": project,
            "entity": entity,
            "mode": mode,
            "dir": str(paths["md"].parent),
            "name": f"report-{'+'.join(experiments)}",
            "group": experiments[0] if len(experiments) == 1 else None,
            "tags": ["report", *experiments],
        },
        {"root": str(report.root), "sources": [str(p) for p in report.sources]},
    )
    if run is None:
        return None
    import wandb

    try:
        table = wandb.Table(columns=["label", "metric", "budget", "mean", "std", "n_seeds"])
        for lab in report.labels:
            for metric in _sorted_metrics(report.stats[lab]):
                for budget, (mean, std, n) in report.stats[lab][metric].items():
                    table.add_data(lab, metric, budget, mean, std if math.isfinite(std) else None, n)
        payload: dict[str, Any] = {"report/table": table}
        if paths.get("png") and Path(paths["png"]).is_file():
            payload["report/plot"] = wandb.Image(str(paths["png"]))
        for t in tables:
            pt = wandb.Table(columns=["branch", "source", "metric", "budget", "value"])
            for row in t.rows:
                for i, (header, metric, budget) in enumerate(t.columns):
                    if row.ours is not None and row.ours[i] is not None:
                        pt.add_data(row.name, "ours", metric, budget, row.ours[i][0])
                        run.summary[f"paper/{t.experiment}/{row.name}/{header}"] = row.ours[i][0]
                    if row.paper is not None and i < len(row.paper) and row.paper[i] is not None:
                        pt.add_data(row.name, "paper", metric, budget, row.paper[i])
            payload[f"paper/{t.experiment}/table"] = pt
        if tables and paths.get("paper_png") and Path(paths["paper_png"]).is_file():
            payload["paper/plot"] = wandb.Image(str(paths["paper_png"]))
        run.log(payload)
    finally:
        run.finish()
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cat_experiments.report",
        description="Aggregate results.json records (a run dir or a Hydra multirun dir) into report.{md,csv,png}.",
    )
    parser.add_argument("dir", type=Path, help="a run dir or a multirun dir holding results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    parser.add_argument(
        "--paper",
        type=Path,
        default=None,
        help="the paper's numbers (default: the copy shipped in cat_experiments/data/)",
    )
    parser.add_argument(
        "--paper-key",
        default=None,
        help="compare with this table of the paper file (default: by experiment name, PAPER_KEYS)",
    )
    parser.add_argument("--no-paper", action="store_true", help="skip the comparison with the paper")
    parser.add_argument(
        "--wandb", action="store_true", help="also log the report to W&B (offline without key/network)"
    )
    parser.add_argument("--wandb-project", default="cat-experiments")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-mode", default="auto", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    report = build_report(args.dir)
    out = args.out if args.out is not None else (args.dir if args.dir.is_dir() else args.dir.parent)
    tables: list[PaperTable] = []
    paper_path = None
    if not args.no_paper:
        paper_path = args.paper or default_paper_path()
        if Path(paper_path).is_file():
            tables = paper_tables(report, load_paper(paper_path), key=args.paper_key)
        elif args.paper is not None:
            raise SystemExit(f"cat_experiments.report: --paper {args.paper}: file not found")
    paths = write_report(report, out)
    if tables:
        paths.update(write_paper_tables(tables, out, paper_path))
        with open(paths["md"], "a", encoding="utf-8") as fh:
            fh.write("\n" + paths["paper_md"].read_text(encoding="utf-8"))
    sys.stdout.write(paths["md"].read_text(encoding="utf-8"))
    if args.wandb:
        run = log_report_wandb(
            report, paths, tables, project=args.wandb_project, mode=args.wandb_mode, entity=args.wandb_entity
        )
        if run is not None:
            print(f"W&B: logged the report to run {run.id} ({run.dir})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
