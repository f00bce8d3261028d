"""Protein runs: plot the hydrophobic-fraction distributions of a finished run's stored evaluation pools
over the reward (``python -m cat_experiments.report plot-h RUN_DIR``). Reads files only: results.json
(its h statistics, computed by the evaluation stage) and the sample stores it names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation.store import SampleStore
from .grid import branch_label
from .plots import plot_h_distributions

__all__ = ["plot_h_for_run"]


def plot_h_for_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Plot the h distributions of every evaluated model of a protein run (base or warmup, and each branch)
    from its stored pools; writes <png>_stats.json (the run's h statistics). Returns (png path, stats)."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    stores = record.get("samples")
    if not stores or "sample_stats" not in record:
        raise FileNotFoundError(f"{run_dir / 'results.json'} names no stored samples or h statistics "
                                "(a run from before stored samples): rerun its evaluation with stage=eval")
    conditional = record.get("task") == "protein_conditional"
    samples: dict[str, list[str]] = {}
    inputs: dict[str, list[str]] = {}
    for name, root in stores.items():
        store = SampleStore(root)
        rows = store.load(sorted(store.stored_ids()))[: int(record["sampling"]["num_problems"])]
        samples[name] = [c for r in rows for c in r["completions"]]
        # the conditional prompt holds the input: "...Input: {seq} \n Output:"
        inputs[name] = [_input_of(r["prompt"]) for r in rows for _ in r["completions"]] if conditional else []
    stats = {name: {**record["sample_stats"][name], "max@k": record["branches"][name].get("max@k")} for name in stores}
    title = (f"{record.get('experiment')}: {record.get('strategy')} N={record.get('target_n')}, "
             f"seed {record.get('seed')}")
    png = Path(out) if out else run_dir / "h_distribution.png"
    labels = {name: _label(name, record) for name in samples}
    plot_h_distributions({labels[k]: v for k, v in samples.items()}, png,
                         "conditional" if conditional else "unconditional",
                         {labels[k]: v for k, v in inputs.items()} if conditional else None, title)
    png.with_name(png.stem + "_stats.json").write_text(json.dumps(stats, indent=2))
    return png, stats


def _input_of(prompt: str) -> str:
    from ..tasks.protein import CONDITIONAL_PROMPT

    head, tail = CONDITIONAL_PROMPT.split("{seq}")
    return prompt[prompt.index(head) + len(head): len(prompt) - len(tail)]


def _label(name: str, record: Mapping[str, Any]) -> str:
    if name == "base":
        return "base (pretrained)"
    if name == "warmup":
        return "warmup (CE)"
    return branch_label(name, record.get("strategy"), record.get("target_n"))
