"""What a record's numbers depend on: its settings (the resolved config less what does not change the
numbers) and the sampling of its pools. The report (grid.py) never merges records with different settings
and labels rows by the settings that differ; every caption states the sampling."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BRANCH_IGNORES", "NOT_SETTINGS", "SAMPLING_FIELDS", "SEED_LINKED", "differing_keys", "flatten", "is_under",
    "record_sampling", "record_settings", "setting_text",
]

#: Flattened config keys (a key or a section prefix) that are not settings of a record's numbers: the seed
#: (rows are averaged over it), the run name (a label prefix), where files go, logging, which stages ran,
#: the budgets reported (columns, not numbers), and speed/memory knobs (eval pools are keyed per problem
#: and sample index, so ``eval.batch_size`` gives the same draws).
NOT_SETTINGS: tuple[str, ...] = (
    "seed", "run_name", "experiment", "run_dir", "cache_dir", "dry_run", "stage", "baseline", "logger", "hydra",
    "warmup.save_steps", "warmup.logging_steps", "objective.save_steps", "objective.logging_steps",
    "eval.enabled", "eval.budgets", "eval.batch_size", "eval.eval_warmup", "eval.vllm_memory_fraction",
    "objective.vllm_gpu_memory_utilization", "hardware.num_threads", "hardware.dist_timeout_min",
    "hardware.throughput", "hardware.accelerate_config", "hardware.gradient_checkpointing",
    "model.gradient_checkpointing", "model.pretrain.num_threads", "model.pretrain.check_samples",
)
#: Keys that interpolate the seed (``model.init_seed: ${seed}`` in conf/model/tiny.yaml): not a setting
#: while they equal the record's seed.
SEED_LINKED: tuple[str, ...] = ("model.init_seed",)
#: Per branch, the config sections its numbers do not depend on.
BRANCH_IGNORES: dict[str, tuple[str, ...]] = {"warmup": ("strategy", "objective"), "standard": ("strategy",)}
#: The sampling parameters every caption states: results.json "sampling" key -> caption text.
SAMPLING_FIELDS: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"), ("top_p", "top-p"), ("top_k", "top-k"), ("pool_size", "pool size"),
    ("max_new_tokens", "max new tokens"), ("engine", "engine"),
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"section.key": value}`` (lists and empty sections are values)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def is_under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether a flattened key is one of ``prefixes`` or inside one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def setting_text(value: Any) -> str:
    """A setting's value as an override writes it: null, true, 0.0001, [1, 2]."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def record_settings(rec: dict[str, Any], branch: str = "cat") -> dict[str, str]:
    """The settings of one branch of a record: its flattened config (``section.key -> value`` as text)
    less :data:`NOT_SETTINGS`, seed-linked keys equal to the seed and the branch's
    :data:`BRANCH_IGNORES`. The record's top-level fields stand in for keys its config lacks."""
    flat = {
        "strategy.name": rec.get("strategy"), "strategy.n": rec.get("target_n"), "objective.name": rec.get("objective"),
        "dataset.name": rec.get("task"), "eval.pool_size": rec.get("pool_size"),
    }
    if rec.get("strategy_k") is not None:
        flat["strategy.k"] = rec["strategy_k"]
    config = rec.get("config")
    if isinstance(config, dict):
        flat.update(flatten(config))
    seed = rec.get("seed", flat.get("seed"))
    ignored = NOT_SETTINGS + BRANCH_IGNORES.get(branch, ())
    return {
        key: setting_text(value)
        for key, value in flat.items()
        if not is_under(key, ignored) and not (key in SEED_LINKED and value == seed)
    }


def differing_keys(settings: set[tuple]) -> set[str]:
    """The keys whose values differ among several settings (a key missing from one counts as differing)."""
    if len(settings) < 2:
        return set()
    dicts = [dict(s) for s in settings]
    keys = set().union(*dicts)
    return {k for k in keys if len({d.get(k, "<unset>") for d in dicts}) > 1}


def record_sampling(rec: dict[str, Any]) -> dict[str, Any]:
    """How a record's pools were sampled: ``results.json["sampling"]`` when present, else ``config.eval``
    (else the top-level pool size); only the :data:`SAMPLING_FIELDS` it has."""
    sampling = rec.get("sampling")
    if not isinstance(sampling, dict):
        config = rec.get("config")
        sampling = config.get("eval") if isinstance(config, dict) else None
        sampling = dict(sampling) if isinstance(sampling, dict) else {}
        sampling.setdefault("pool_size", rec.get("pool_size"))
    return {key: sampling[key] for key, _ in SAMPLING_FIELDS if sampling.get(key) is not None}
