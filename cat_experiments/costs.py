"""What a run will cost: tokens to generate and to train on per stage, and GPU-hours at given throughputs.

    GPU-hours = generated tokens / throughput[engine] / 3600 + trained tokens / throughput["train"] / 3600

``throughput`` is tokens per second per GPU (``hardware.throughput``: ``hf`` and ``vllm`` for sampling,
``train`` for forward + backward over prompt + completion), so the figure does not depend on the number
of GPUs (wall time is GPU-hours / processes, if the work scales). Generated tokens are upper bounds
(every sample runs to its token limit); trained tokens use the mean example length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["grid_size", "job_costs", "format_costs"]


def _hours(tokens: float | None, rate: float | None) -> float | None:
    if tokens is None or not rate:
        return None
    return tokens / float(rate) / 3600.0


def job_costs(plan: Mapping[str, Any], throughput: Mapping[str, float], eval_engine: str, rl_engine: str) -> dict:
    """Per stage of one job: {"tokens_generated", "tokens_trained", "engine", "gpu_hours", "shared"};
    "shared" marks the stages every job of a grid shares (warmup, standard branch, their evaluations)."""
    tok = plan["tokens"]
    per_example, prompt_tokens = tok["per_example"], tok["prompt"]
    stages: dict[str, dict[str, Any]] = {}

    def add(name: str, generated: float | None, trained: float | None, engine: str | None, shared: bool) -> None:
        parts = [0.0 if generated == 0 else _hours(generated, throughput.get(engine)),
                 0.0 if trained == 0 else _hours(trained, throughput.get("train"))]
        stages[name] = {"tokens_generated": generated, "tokens_trained": trained, "engine": engine, "shared": shared,
                        "gpu_hours": None if any(p is None for p in parts) else sum(parts)}

    w = plan["warmup"]
    if w["enabled"]:
        add("warmup", 0, None if per_example is None else w["optimizer_steps"] * w["examples_per_step"] * per_example,
            None, True)
    for name, b in plan["branches"].items():
        shared = name == "standard"
        if b["objective"] == "sft":
            add(f"branch {name}", 0, None if per_example is None else
                b["optimizer_steps"] * b["examples_per_step"] * per_example, None, shared)
        else:
            trained = None if prompt_tokens is None else b["rollouts"] * (prompt_tokens + b["max_completion_length"])
            add(f"branch {name}", b["max_generated_tokens"], trained, rl_engine, shared)
    e = plan["eval"]
    per_model = e["samples_per_model"] * e["max_new_tokens"]
    for model in e["models"]:
        add(f"eval {model}", per_model, 0, eval_engine, model != "cat")
    return stages


def grid_size(sweep_params: Mapping[str, Any] | None) -> tuple[int, int]:
    """(jobs, seeds) of a Hydra sweep given as ``hydra.sweeper.params`` (``{"strategy.n": "4,16"}``)."""
    if not sweep_params:
        return 1, 1
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    jobs, seeds = 1, 1
    for key, value in sweep_params.items():
        override = parser.parse_override(f"{key}={value}")
        n = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
        jobs *= n
        if key.lstrip("+") == "seed":
            seeds = n
    return jobs, seeds


def _fmt_tokens(n: float | None) -> str:
    if n is None:
        return "? tokens"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B tokens"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M tokens"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k tokens"
    return f"{int(n)} tokens"


def _fmt_hours(h: float | None) -> str:
    return "? GPU-h" if h is None else f"{h:.2f} GPU-h" if h < 10 else f"{h:,.0f} GPU-h"


def format_costs(stages: Mapping[str, Mapping[str, Any]], throughput: Mapping[str, float], jobs: int = 1,
                 seeds: int = 1, processes: int = 1, timeout_min: int | None = None) -> list[str]:
    """The plan's cost lines: one per stage, this job's total, and the grid's (jobs of the sweep sharing
    the warmup, the standard branch and their evaluations per seed); a warning when the job's GPU-hours,
    shared by its ``processes``, exceed the launcher's time limit ``timeout_min``."""
    rates = ", ".join(f"{k} {v:g}" for k, v in sorted(throughput.items())) or "none given"
    lines = [f"  cost (hardware.throughput, tokens/s per GPU: {rates}):"]
    for name, c in stages.items():
        what = []
        if c["tokens_generated"]:
            what.append(f"generate {_fmt_tokens(c['tokens_generated'])} ({c['engine']})")
        if c["tokens_trained"] != 0:
            what.append(f"train {_fmt_tokens(c['tokens_trained'])}")
        lines.append(f"    {name}: {' + '.join(what)} -> {_fmt_hours(c['gpu_hours'])}")
    hours = [c["gpu_hours"] for c in stages.values()]
    job = None if any(h is None for h in hours) else sum(hours)
    shared = None if job is None else sum(c["gpu_hours"] for c in stages.values() if c["shared"])
    lines.append(f"    this job: {_fmt_hours(job)}")
    if jobs > 1:
        grid = None if job is None else shared * seeds + (job - shared) * jobs
        lines.append(f"    the grid ({jobs} jobs of the preset's sweep, {seeds} seed(s); warmup, standard and their "
                     f"evaluations shared per seed): {_fmt_hours(grid)}")
    if job is not None and timeout_min and job / max(processes, 1) > timeout_min / 60:
        lines.append(f"  warning: this job needs about {_fmt_hours(job)} on {max(processes, 1)} process(es), "
                     f"~{job / max(processes, 1):.1f} h, more than the launcher's time limit "
                     f"hydra.launcher.timeout_min={timeout_min} ({timeout_min / 60:g} h): it will hit the limit "
                     "and rely on requeues (hydra.launcher.max_num_timeout); raise timeout_min or give it more GPUs")
    missing = sorted({c["engine"] for c in stages.values() if c["tokens_generated"] and c["engine"]
                      and not throughput.get(c["engine"])} | ({"train"} if any(
                          c["tokens_trained"] for c in stages.values()) and not throughput.get("train") else set()))
    if missing:
        lines.append("    (set hardware.throughput." + " / .".join(missing) + " for GPU-hours; "
                     "benchmarks/sampling.py measures sampling)")
    if any(c["tokens_trained"] is None for c in stages.values()):
        lines.append("    (training tokens unknown: the data is not loaded; set dataset.tokens_per_example)")
    return lines
