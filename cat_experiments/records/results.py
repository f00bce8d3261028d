"""What a run writes and reads back: ``results.json``, ``scaling.csv`` (and ``scaling.png``, plots.py).

A run's record lives in its run dir:

- ``results.json``: ``{"experiment", "strategy", "target_n", "seed", "objective", "task", "pool_size",
  "branches": {branch: {metric: {budget: value}}}, "train_stats"?, "config"?}`` (budgets are string
  keys in JSON; :func:`load_results` turns them back into ints),
- ``scaling.csv``: one row ``branch,metric,budget,value`` per point,
- ``scaling.png``: one panel per metric, value against budget (log2 axis), one line per branch, the
  CAT branch's target N as a dashed vertical line.

The report (``python -m cat_experiments.report``) reads only these records.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import atomic_write, branches_int, metric_budget_name, plain_copy, sorted_metrics
from .plots import plot_scaling
from .settings import SAMPLING_FIELDS, record_sampling, setting_text

__all__ = ["REQUIRED_KEYS", "load_results", "metric_budget_name", "summary_table", "write_records"]

REQUIRED_KEYS = ("experiment", "strategy", "target_n", "seed", "objective", "task", "pool_size", "branches")


def write_records(run_dir: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``results.json``, ``scaling.csv`` and ``scaling.png`` into ``run_dir``; returns their paths."""
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise ValueError(f"results is missing key(s) {missing}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    branches = branches_int(results["branches"])
    # per-problem values go to their own file (they would dwarf the curves); results.json keeps the standard errors
    per_problem = results.get("per_problem")
    record = plain_copy({k: v for k, v in results.items() if k not in ("branches", "per_problem")})
    record["branches"] = {
        b: {m: {str(k): v for k, v in curve.items()} for m, curve in metrics.items()}
        for b, metrics in branches.items()
    }
    paths = {"json": run_dir / "results.json", "csv": run_dir / "scaling.csv", "png": run_dir / "scaling.png"}
    if per_problem is not None:
        paths["per_problem"] = run_dir / "per_problem.json"
        text_pp = json.dumps(plain_copy(per_problem))
        atomic_write(paths["per_problem"], lambda fh: fh.write(text_pp + "\n"))
    text = json.dumps(record, indent=2, allow_nan=True)
    atomic_write(paths["json"], lambda fh: fh.write(text + "\n"))

    def _csv(fh):
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["branch", "metric", "budget", "value"])
        for b, metrics in branches.items():
            for m in sorted_metrics(metrics):
                for k, v in metrics[m].items():
                    w.writerow([b, m, k, repr(float(v))])

    atomic_write(paths["csv"], _csv)
    title = (
        f"{results['experiment']}: {results['strategy']} N={results['target_n']} "
        f"({results['objective']}), seed {results['seed']}\n{run_sampling_caption(results)}"
    )
    # the CAT branch's target N, dashed (not for the standard strategy: its N=1 is no target)
    target = {"cat": results["target_n"]} if str(results["strategy"]) != "standard" else None
    plot_scaling(branches, paths["png"], title, target_n=target)
    return paths


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one inside a run dir), with int budget keys."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["branches"] = branches_int(data.get("branches", {}))
    return data


def summary_table(results: Mapping[str, Any]) -> str:
    """A markdown table of one run: rows = branches, columns = metric@budget."""
    branches = branches_int(results["branches"])
    cols = sorted({(m, b) for curves in branches.values() for m, c in curves.items() for b in c},
                  key=lambda mb: (["pass@k", "maj@k", "max@k"].index(mb[0]) if mb[0] in ("pass@k", "maj@k", "max@k")
                                  else 9, mb[0], mb[1]))
    head = "| branch | " + " | ".join(metric_budget_name(m, b) for m, b in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for name, curves in branches.items():
        cells = [f"{curves[m][b]:.3f}" if b in curves.get(m, {}) else "" for m, b in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", run_sampling_caption(results)])


def run_sampling_caption(results: Mapping[str, Any]) -> str:
    """How one run's pools were sampled: temperature, top-p, top-k, pool size, ..., N and the seed."""
    sampling = record_sampling(dict(results))
    parts = [f"{text} {setting_text(sampling[key])}" for key, text in SAMPLING_FIELDS if key in sampling]
    return f"Sampling: {', '.join(parts)}; N {results.get('target_n')}; seed {results.get('seed')}."

