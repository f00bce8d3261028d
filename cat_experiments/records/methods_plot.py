"""The methods comparison's files (records/methods.py has the numbers): ``methods.md``, ``methods.csv`` and
``methods.png``, a figure of every method's curve and its paired difference from standard."""

from __future__ import annotations

import csv
from pathlib import Path

from .methods import MethodsTable, gain_curve, render_methods_markdown

__all__ = ["methods_figure", "write_methods_report"]


def methods_figure(table: MethodsTable, title: str = ""):
    """A matplotlib Figure: per target metric (pass@k, maj@k) a column; top row every method's curve (mean
    over seeds, standard on every panel), bottom row the paired difference from standard (gain_curve);
    log2 budget axis, each method's target N a dashed line in its colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ._io import sorted_metrics

    metrics = sorted_metrics({r.key.metric for r in table.rows})
    std = table.standard_row()
    rows = ([std] if std is not None and std not in table.rows else []) + list(table.rows)
    fig = Figure(figsize=(6.4 * len(metrics), 8.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(metrics), squeeze=False)
    colors = {r.key.label: f"C{i % 10}" for i, r in enumerate(rows)}
    for col, metric in enumerate(metrics):
        top, bottom = axes[0][col], axes[1][col]
        for row in rows:
            if row.key.strategy != "standard" and row.key.metric != metric:
                continue
            label, color = row.key.label, colors[row.key.label]
            for ax, curve in ((top, row.mean_curve("method", metric)),
                              (bottom, {b: 0.0 for b in row.mean_curve("method", metric)}
                               if row.key.strategy == "standard" else gain_curve(row, metric))):
                if curve:
                    ks = sorted(curve)
                    ax.plot(ks, [curve[k] for k in ks], marker="o", markersize=4, color=color,
                            label=label if ax is top else None)
            if row.key.strategy != "standard":
                for ax in (top, bottom):
                    ax.axvline(row.key.n, color=color, linestyle="--", linewidth=0.8, alpha=0.6)
        top.set_title(f"{metric} (mean over seeds)")
        bottom.set_title(f"{metric}: method - standard (paired by seed)")
        top.set_ylabel(metric)
        bottom.set_ylabel(f"{metric} - standard")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(table.budgets, [str(b) for b in table.budgets])
            ax.set_xlabel("budget k (dashed: each method's target N)")
            ax.grid(alpha=0.3)
        top.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def write_methods_report(table: MethodsTable, out: str | Path, title: str | None = None) -> dict[str, Path]:
    """``methods.md`` (render_methods_markdown), ``methods.csv`` (one row per method with the table's
    numbers) and ``methods.png`` (methods_figure) in ``out``."""
    from .plots import save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "methods.md", "csv": out / "methods.csv", "png": out / "methods.png"}
    paths["md"].write_text(render_methods_markdown(table, title), encoding="utf-8")
    with open(paths["csv"], "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["method", "metric", "n", "value", "gain", "gain_se", "wins", "seeds", "pass1_tax", "pass1_tax_se",
                    "std_samples", "std_samples_bound", "efficiency", *[f"k={b}" for b in table.budgets]])
        for row in table.rows:
            if row.key.strategy == "standard":
                continue
            info = table.line(row)
            r = info["reach"]
            w.writerow([row.key.label, row.key.metric, row.key.n, info["mean_value"], info["gain"].mean, info["gain"].se,
                        info["gain"].wins, info["gain"].n, info["tax"].mean, info["tax"].se,
                        r.k if r else "", r.bound if r else "", r.k / row.key.n if r else "",
                        *[info["curve"].get(b, "") for b in table.budgets]])
    save_png(methods_figure(table, title or f"methods: {out}"), paths["png"])
    return paths
