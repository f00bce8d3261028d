"""Plots of records: a run's scaling curves, a grid against the paper, protein h-distributions."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..tasks.protein import (
    RARE_H,
    clean_sequence,
    conditional_reward_of_h,
    hydrophobic_fraction,
    is_valid_sequence,
    unconditional_reward_of_h,
)
from ._io import atomic_write, branches_int, sorted_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["is_target_n", "plot_h_distributions", "plot_scaling", "save_png", "scaling_figure"]

_METRIC_YLABEL = {"pass@k": "pass@k", "maj@k": "maj@k (exact)", "max@k": "expected max reward"}


def scaling_figure(
    branches: Mapping[str, Mapping[str, Mapping[int, float]]],
    title: str = "",
    errors: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
    target_n: Mapping[str, int] | None = None,
    n_seeds: Mapping[str, int] | None = None,
) -> Figure:
    """One panel per metric: value vs budget (log2 x axis), a line with markers per branch.

    ``errors`` (same shape as ``branches``): a half-width drawn as a shaded band ``value ± error``
    (the report passes the sample std over seeds, so the band is mean ± 1 sample std). ``n_seeds``
    (branch -> number of seeds): a branch with 2 or more is labelled ``"{branch} (mean ± std, n seeds)"``.
    ``target_n`` (branch -> the N its CAT objective targets): a vertical dashed line at budget N on every
    panel that shows the branch, labelled ``"target N=.."``, in the branch's colour (grey when several
    branches share that N); N <= 1 (the standard objective) gets no line.
    Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    branches = branches_int(branches)
    targets = {b: int(n) for b, n in (target_n or {}).items() if b in branches and is_target_n(n)}
    metrics = sorted_metrics({m for curves in branches.values() for m in curves})
    n = max(1, len(metrics))
    fig = Figure(figsize=(4.8 * n, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        all_k: set[int] = set()
        colors: dict[str, str] = {}
        for label, curves in branches.items():
            curve = curves.get(metric)
            if not curve:
                continue
            ks = sorted(curve)
            ys = [curve[k] for k in ks]
            all_k.update(ks)
            seeds = int((n_seeds or {}).get(label, 1))
            name = f"{label} (mean ± std, {seeds} seeds)" if seeds > 1 else label
            (line,) = ax.plot(ks, ys, marker="o", markersize=4, label=name)
            colors[label] = line.get_color()
            err = (errors or {}).get(label, {}).get(metric)
            if err:
                e = [float(err.get(k, float("nan"))) for k in ks]
                if any(math.isfinite(x) for x in e):
                    lo = [y - (x if math.isfinite(x) else 0.0) for y, x in zip(ys, e, strict=True)]
                    hi = [y + (x if math.isfinite(x) else 0.0) for y, x in zip(ys, e, strict=True)]
                    ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
        by_n: dict[int, list[str]] = {}
        for label, tn in targets.items():
            if label in colors:
                by_n.setdefault(tn, []).append(label)
        for tn, labels in sorted(by_n.items()):
            color = colors[labels[0]] if len(labels) == 1 else "0.35"
            ax.axvline(tn, linestyle="--", linewidth=1.2, color=color, alpha=0.9, label=f"target N={tn}")
            all_k.add(tn)
        if all_k and max(all_k) > min(all_k):
            ax.set_xscale("log", base=2)
            ticks = sorted(all_k)
            if len(ticks) > 12:  # dense budgets: label the powers of two only
                ticks = [2**e for e in range(max(all_k).bit_length()) if min(all_k) <= 2**e <= max(all_k)]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(round(x))}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("budget k")
        ax.set_ylabel(_METRIC_YLABEL.get(metric, metric))
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def is_target_n(n: object) -> bool:
    """A target N worth marking: an integer above 1 (N=1 is the standard objective)."""
    try:
        return float(n) > 1 and float(n) == int(float(n))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """``fig`` written to ``path`` as a png at 120 dpi, atomically; returns ``path``."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")
    return path


def plot_scaling(
    branches: Mapping[str, Mapping[str, Mapping[int, float]]],
    path: str | os.PathLike,
    title: str = "",
    errors: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
    target_n: Mapping[str, int] | None = None,
    n_seeds: Mapping[str, int] | None = None,
) -> Path:
    """:func:`scaling_figure` written to ``path`` as a png (atomically); returns ``path``."""
    return save_png(scaling_figure(branches, title, errors, target_n, n_seeds), path)


def plot_h_distributions(samples: Mapping[str, Sequence[str]], path: str | Path, task: str = "unconditional",
                         inputs: Mapping[str, Sequence[str]] | None = None, title: str = "") -> Path:
    """Histograms of h per branch with the reward landscape overlaid (right axis).

    task="unconditional": x = h of each valid sample, curve R(h).
    task="conditional": x = h_out - (1 - h_in) (the error from the target composition; `inputs` gives
    each sample's input sequence), curve 10 exp(-x^2/0.05) (R without the copy penalty).
    Invalid samples (bad alphabet / too short) are counted in the legend, not plotted.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    min_len = 10 if task == "unconditional" else 5
    if task == "unconditional":
        bins = [i / 50 for i in range(51)]
        grid = [i / 400 for i in range(401)]
        curve = [unconditional_reward_of_h(x) for x in grid]
        xlabel = "hydrophobic fraction h"
    else:
        bins = [-1 + i / 25 for i in range(51)]
        grid = [-1 + i / 200 for i in range(401)]
        curve = [conditional_reward_of_h(0.5, 0.5 + x) for x in grid]  # h_in = 0.5: no copy penalty
        xlabel = "h_out - (1 - h_in)"
    for name, seqs in samples.items():
        xs = []
        n_bad = 0
        for i, seq in enumerate(seqs):
            seq = clean_sequence(seq)
            if len(seq) < min_len or not is_valid_sequence(seq):
                n_bad += 1
                continue
            h = hydrophobic_fraction(seq)
            xs.append(h if task == "unconditional" else h - (1 - hydrophobic_fraction(inputs[name][i])))
        label = f"{name} (n={len(seqs)}"
        if task == "unconditional":
            label += f", h>=.65: {sum(x >= RARE_H for x in xs) / max(1, len(seqs)):.2f}"
        label += f", invalid {n_bad})" if n_bad else ")"
        ax.hist(xs, bins=bins, alpha=0.45, density=True, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax2 = ax.twinx()
    ax2.plot(grid, curve, color="black", lw=1.5, label="reward")
    ax2.set_ylabel("reward")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or f"protein {task}: final distributions vs reward", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
