"""A grid beside the paper: when an experiment of the records is one of the paper's (``PAPER_KEYS``:
the MATH and protein presets), render it in the paper's table shape -- rows = branches (``standard``,
``pass@16``, ``maj@8,k=3``, ``bon-4``, ...), columns = the paper's budgets -- with the paper's row
printed under each of ours (MATH in percent), into ``paper.md``, ``paper.csv`` and ``paper.png`` (ours
solid, the paper dashed). The paper's numbers ship with the package
(``cat_experiments/data/paper_results.json``).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write
from .grid import Report, sampling_caption
from .plots import save_png

__all__ = [
    "PAPER_KEYS", "PaperRow", "PaperTable", "default_paper_path", "load_paper", "paper_row_name", "paper_tables",
    "render_paper_markdown", "write_paper_tables",
]

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

#: Settings that paper_row_name already writes into a row's name.
_IN_PAPER_NAME = ("strategy.name", "strategy.n", "strategy.k", "strategy.weight_form")

_PAPER_METRICS = {"pass@k": "pass@k", "maj@k": "maj@k", "expected max reward": "max@k", "max@k": "max@k"}


def default_paper_path() -> Path:
    """The paper's reported table means, shipped with the package (``cat_experiments/data/``), so a
    user's clone prints them with nothing beside it."""
    return Path(__file__).resolve().parents[1] / "data" / "paper_results.json"


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
    sampling: str = ""  # how our rows' pools were sampled (grid.sampling_caption)


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
            # settings that tell this row from others of its name (k and the weight form are in the name)
            shown = {k: v for k, v in report.meta.get(lab, {}).get("settings", {}).items()
                     if k not in _IN_PAPER_NAME}
            suffix = " [" + ", ".join(f"{k}={v}" for k, v in shown.items()) + "]" if name and shown else ""
            rows.append(PaperRow((name + suffix) if name else lab.split(": ", 1)[-1], ours, paper_values))
        for name, values in prows.items():  # the paper's rows we have not run
            if name not in used:
                rows.append(PaperRow(name, None, values))
        description = f"paper table `{pkey}`: {metric_desc}" + (", in %" if percent else "")
        tables.append(PaperTable(experiment, pkey, description, columns, "%" if percent else "", rows,
                                 sampling_caption(report, labels)))
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
        if t.sampling:
            lines += [f"Ours: {t.sampling}", ""]
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
    atomic_write(paths["paper_md"], lambda fh: fh.write(text + "\n"))

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

    atomic_write(paths["paper_csv"], _csv)
    plot_paper(tables, paths["paper_png"])
    return paths


def plot_paper(tables: Sequence[PaperTable], path: Path) -> Path:
    """One panel per table: our rows solid with markers, the paper's dashed, against the budget (log2 x axis)."""
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
        if t.sampling:  # the caption: how our pools were sampled
            ax.text(0.0, -0.18, "\n".join(textwrap.wrap(t.sampling, 70)), transform=ax.transAxes,
                    fontsize=6, va="top")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_png(fig, path)
