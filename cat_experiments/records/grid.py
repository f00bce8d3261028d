"""Aggregate the records of a grid (a Hydra multirun dir or one run dir) into one report.

Reads every ``results.json`` under a dir -- records only, never models -- and builds one row per
branch label and settings (below):

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

Records with different settings are never merged. A record's settings are its resolved config
(``results.json["config"]``, flattened to ``section.key``) less what does not change its numbers
(settings.py ``NOT_SETTINGS``: the seed, where files go, logging, speed and memory knobs), and per branch
less the sections that branch does not depend on (``BRANCH_IGNORES``: the warmup ignores the strategy
and the objective, the standard branch the strategy). Records without a config are keyed by their top-level
fields (strategy, N, k, objective, task, pool size). When the records of one label have several
settings, each row's label gets the settings that differ among them, as Hydra's ``override_dirname``
writes them: ``"pass_at_n(N=32) [objective.learning_rate=0.0001]"``.

Every table and the plot state the sampling of the pools (:func:`sampling_caption`: temperature, top-p,
top-k, pool size, max new tokens, engine, from ``results.json["sampling"]`` when the record has it, else
from ``config.eval``), the target N of the CAT rows and the seeds.

:func:`write_report` writes ``report.csv`` (label, metric, budget, mean, std, n_seeds), ``report.md``
(a table per metric: labels x budgets, "mean ± std"; a line per CAT row and metric with its value at
the target N per seed beside the standard row's; then per-seed tables) and ``report.png``
(:func:`report_figure`: per row the mean over seeds, with a band of mean ± 1 sample std when the row
has 2 or more seeds, and each CAT row's target N as a dashed vertical line).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import metric_budget_name, sorted_metrics
from .plots import is_target_n, save_png, scaling_figure
from .results import load_results
from .settings import SAMPLING_FIELDS, differing_keys, record_sampling, record_settings, setting_text

__all__ = [
    "Report", "branch_label", "build_report", "find_results", "render_markdown", "report_figure", "sampling_caption",
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
    # label -> what the row is: experiment, branch, strategy, n, k, weight_form, objective, task, settings
    # (the settings that tell it from rows of the same label), sampling (field -> values of its records)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    # label -> metric -> budget -> standard error over problems, for rows of one record (a single seed)
    stderr: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return sorted_metrics({m for curves in self.stats.values() for m in curves})


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

    experiments = {_run_name(r) for _, r in records}
    objectives = {r.get("objective") for _, r in records}
    # (record index, branch) -> (label without settings, settings); label -> the settings seen under it
    rows: dict[tuple[int, str], tuple[str, tuple]] = {}
    seen: dict[str, set[tuple]] = defaultdict(set)
    for i, (_, rec) in enumerate(records):
        for branch in rec["branches"]:
            label = branch_label(branch, rec.get("strategy"), rec.get("target_n"))
            # the standard strategy's CAT branch is the standard branch
            kind = "standard" if label == "standard" else branch
            if len(objectives) > 1 and label != WARMUP_LABEL and branch in ("cat", "standard"):
                label = f"{label} [{rec.get('objective')}]"
            if len(experiments) > 1:
                label = f"{_run_name(rec)}: {label}"
            settings = tuple(sorted(record_settings(rec, kind).items()))
            rows[(i, branch)] = (label, settings)
            seen[label].add(settings)
    meta: dict[str, dict[str, Any]] = {}
    # (label, seed) -> metric -> budget -> [values from each job]
    raw: dict[tuple[str, Any], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    order: dict[str, tuple] = {}
    stderr_of: dict[str, list[dict[str, dict[int, float]]]] = {}
    for i, (_, rec) in enumerate(records):
        strategy, target_n = rec.get("strategy"), rec.get("target_n")
        for branch, curves in rec["branches"].items():
            base, settings = rows[(i, branch)]
            differing = differing_keys(seen[base])
            shown = {k: v for k, v in settings if k in differing}
            label = base + (" [" + ", ".join(f"{k}={v}" for k, v in shown.items()) + "]" if shown else "")
            order.setdefault(label, _label_order(_run_name(rec), label, strategy, target_n))
            info = meta.setdefault(label, {**_row_meta(rec, branch), "settings": shown, "sampling": {}})
            for key, value in record_sampling(rec).items():
                if value not in info["sampling"].setdefault(key, []):
                    info["sampling"][key].append(value)
            seed = rec.get("seed")
            for metric, curve in curves.items():
                for budget, value in curve.items():
                    raw[(label, seed)][metric][budget].append(float(value))
            se = rec.get("stderr", {}).get(branch)
            if se:
                stderr_of.setdefault(label, []).append({m: {int(b): float(v) for b, v in c.items()} for m, c in se.items()})

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
        # one record behind a row: its standard error over problems stands in for the spread over seeds
        {lab: stderr_of[lab][0] for lab in labels if len(stderr_of.get(lab, [])) == 1 and len(per_seed[lab]) == 1},
    )


def _run_name(rec: dict[str, Any]) -> Any:
    return rec.get("run_name", rec.get("experiment"))


def sampling_caption(report: Report, labels: Sequence[str] | None = None) -> str:
    """One line stating how the rows' pools were sampled: temperature, top-p, top-k, pool size, max new
    tokens, engine (several values joined by " / " when rows differ), the CAT rows' target N and the seeds."""
    labels = report.labels if labels is None else list(labels)
    values: dict[str, list[Any]] = defaultdict(list)
    for lab in labels:
        for key, vals in report.meta.get(lab, {}).get("sampling", {}).items():
            values[key] += [v for v in vals if v not in values[key]]
    parts = [
        f"{text} {' / '.join(setting_text(v) for v in values[key])}" if values.get(key) else f"{text} unrecorded"
        for key, text in SAMPLING_FIELDS
    ]
    ns = sorted({n for lab in labels if (n := _target_n(report, lab)) is not None})
    seeds = sorted({s for lab in labels for s in report.per_seed.get(lab, {})}, key=_seed_order)
    n_text = ", ".join(map(str, ns)) if ns else "1 (no CAT row)"
    seed_text = f"{', '.join(_fmt_seed(s) for s in seeds)} ({len(seeds)})"
    return f"Sampling: {', '.join(parts)}; N {n_text}; seeds {seed_text}."


def _strategy_cfg(rec: dict[str, Any]) -> dict[str, Any]:
    cfg = rec.get("config")
    strategy = cfg.get("strategy") if isinstance(cfg, dict) else None
    return strategy if isinstance(strategy, dict) else {}


def _variant(rec: dict[str, Any]) -> tuple:
    """What tells apart CAT runs with the same strategy and N: (k, weight form). The weight form only
    matters for RL (SFT always uses p S'(p)/S(p))."""
    s = _strategy_cfg(rec)
    k = rec.get("strategy_k", s.get("k")) if rec.get("strategy") == "majority" else None
    form = s.get("weight_form") if rec.get("objective") == "rl" else None
    return (k, form)


def _row_meta(rec: dict[str, Any], branch: str) -> dict[str, Any]:
    info = {
        "experiment": _run_name(rec),
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


def _cell(mean: float, std: float, n: int, se: float | None = None) -> str:
    """mean ± sample std over seeds; one seed: mean (± SE over problems) when the record has it."""
    if n < 2 or not math.isfinite(std):
        return f"{mean:.3f}" if se is None else f"{mean:.3f} (±{se:.3f} SE)"
    return f"{mean:.3f} ± {std:.3f}"


def render_markdown(report: Report) -> str:
    """The markdown report: a table per metric (labels x budgets, mean ± std, seeds), then per seed."""
    lines = [
        f"# CAT report: {report.root}",
        "",
        f"{len(report.sources)} run record(s). Cells: mean ± sample std over seeds; for one seed, the mean "
        "(±SE: its standard error over the test problems). "
        "Rows with different settings are never merged.",
        "",
        sampling_caption(report),
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
            se = report.stderr.get(lab, {}).get(metric, {})
            cells = [_cell(*curve[b], se.get(b)) if b in curve else "" for b in budgets]
            n = max(s[2] for s in curve.values())
            lines.append(f"| {lab} | " + " | ".join(cells) + f" | {n} |")
        lines += ["", sampling_caption(report), ""]
    lines += _target_n_lines(report)
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
        lines += ["", sampling_caption(report), ""]
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
            for metric in sorted_metrics(report.stats[lab]):
                for budget, (mean, std, n) in report.stats[lab][metric].items():
                    w.writerow([lab, metric, budget, repr(mean), repr(std) if math.isfinite(std) else "", n])
    paths["md"].write_text(render_markdown(report) + "\n", encoding="utf-8")
    save_png(report_figure(report), paths["png"])
    return paths


def _target_n(report: Report, label: str) -> int | None:
    """The N a CAT row targets (None for warmup, standard, or N <= 1)."""
    info = report.meta.get(label, {})
    if info.get("branch") != "cat" or str(info.get("strategy")) == "standard" or not is_target_n(info.get("n")):
        return None
    return int(info["n"])


def report_figure(report: Report):
    """The report's plot (a matplotlib Figure): per row the mean over seeds; a row with 2 or more seeds
    gets a shaded band of mean ± 1 sample std (ddof=1) and ``"(mean ± std, n seeds)"`` in its legend
    entry; each CAT row's target N is a dashed vertical line."""
    means = {
        lab: {m: {b: s[0] for b, s in c.items()} for m, c in report.stats[lab].items()}
        for lab in report.labels
    }
    stds = {
        lab: {m: {b: s[1] for b, s in c.items()} for m, c in report.stats[lab].items()}
        for lab in report.labels
    }
    n_seeds = {lab: len(report.per_seed[lab]) for lab in report.labels}
    targets = {lab: n for lab in report.labels if (n := _target_n(report, lab)) is not None}
    title = f"CAT report: {report.root.name or report.root}"
    if any(n > 1 for n in n_seeds.values()):
        title += " (bands: mean ± 1 sample std over seeds)"
    # the caption, wrapped to the figure's width (4.8 inches per metric panel)
    title += "\n" + "\n".join(textwrap.wrap(sampling_caption(report), 60 * max(1, len(report.metrics))))
    return scaling_figure(means, title, errors=stds, target_n=targets, n_seeds=n_seeds)


def _short(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}".removeprefix("0")


def _target_n_lines(report: Report) -> list[str]:
    """Per CAT row and metric: its value at the target N per seed, beside the standard row of the same
    experiment and objective, e.g. ``pass@32 per seed (standard / majority(N=32)): seed 0 .795/.778``."""
    lines = []
    for lab in report.labels:
        n = _target_n(report, lab)
        if n is None:
            continue
        info = report.meta[lab]
        settings = info.get("settings", {})
        base = next((o for o in report.labels if str(report.meta[o].get("strategy")) == "standard"
                     and report.meta[o].get("experiment") == info.get("experiment")
                     and report.meta[o].get("objective") == info.get("objective")
                     and all(settings.get(k, v) == v for k, v in report.meta[o].get("settings", {}).items())),
                    None)
        for metric in report.metrics:
            cat = {s: c[metric][n] for s, c in report.per_seed[lab].items() if n in c.get(metric, {})}
            if not cat:
                continue
            std = {} if base is None else {
                s: c[metric][n] for s, c in report.per_seed[base].items() if n in c.get(metric, {})
            }
            name = metric_budget_name(metric, n)
            if std:
                seeds = sorted(set(cat) | set(std), key=_seed_order)
                cells = [f"seed {_fmt_seed(s)} {_short(std.get(s))}/{_short(cat.get(s))}" for s in seeds]
                lines.append(f"- {name} per seed ({base} / {lab}): " + ", ".join(cells))
            else:
                cells = [f"seed {_fmt_seed(s)} {_short(v)}" for s, v in cat.items()]
                lines.append(f"- {name} per seed ({lab}): " + ", ".join(cells))
    return ["## At the target N, per seed", "", *lines, ""] if lines else []
