"""The cache: keys, paths and locks of every expensive artefact (tiny models aside: models/tiny.py).

An artefact lives under ``cache_dir`` at a key hashed from the config sections that produce it and
nothing else, so a grid's branches share one warmup, a rerun skips finished work, and a killed run
resumes from its last checkpoint:

    cache_dir/warmup/<warmup_key>/            checkpoints, final/ (+ DONE when complete)
    cache_dir/branches/<name>-<branch_key>/   checkpoints, final/ (+ DONE), eval-<key>.json beside final
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import StrategyConfig, process_batch
from .distributed import is_main, world_size

DONE = "DONE"


# Config fields added after cache keys were first written, with their defaults: a section keys without them
# while they are at the default, so artefacts cached before the field existed keep their keys.
ADDED_FIELDS: dict[str, Any] = {"estimator": "surrogate", "mix": None}


def _plain(node: Any) -> Any:
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if isinstance(plain, dict):
        plain = {k: v for k, v in plain.items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
    return plain


def config_key(*parts: Any) -> str:
    """A short stable hash of config sections (what an artefact depends on, nothing else)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _batch_keyed(section: DictConfig, cfg: DictConfig) -> Any:
    """A training section as its key sees it: the *global* batch stands where the config's batch is, so
    the number of processes enters the key only when it changes the global batch
    (hardware.keep_global_batch=false); one process, or a kept global batch, keys exactly as before."""
    world = world_size() if world_size() > 1 else int(cfg.hardware.get("num_processes") or 1)
    global_batch = process_batch(section, cfg.hardware, world)[2]
    if global_batch == int(section.per_device_train_batch_size) * int(section.gradient_accumulation_steps):
        return section
    plain = OmegaConf.to_container(section, resolve=True)
    plain["per_device_train_batch_size"] = global_batch // int(section.gradient_accumulation_steps)
    return plain


def warmup_key(cfg: DictConfig) -> str:
    return config_key("warmup", cfg.model, cfg.dataset, _batch_keyed(cfg.warmup, cfg), cfg.seed)


def standard_strategy_cfg() -> DictConfig:
    """The baseline branch's strategy: canonical, so every branch of a grid shares one standard run."""
    return OmegaConf.structured(StrategyConfig(name="standard", n=1))


def branch_key(cfg: DictConfig, strategy_cfg: DictConfig) -> str:
    return config_key("branch", warmup_key(cfg), strategy_cfg, _batch_keyed(cfg.objective, cfg), cfg.seed)


def cache_root(cfg: DictConfig) -> Path:
    root = Path(cfg.cache_dir)
    if not root.is_absolute():
        try:
            from hydra.utils import get_original_cwd

            root = Path(get_original_cwd()) / root
        except (ImportError, ValueError):
            root = Path.cwd() / root
    return root


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint (trainer_state.json is written last, so a run killed mid-save
    leaves a checkpoint without it, which is skipped)."""
    ckpts = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    ckpts.sort(key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


@contextmanager
def main_lock(path: Path):
    """``cache_lock`` on the main rank only (other grid jobs wait there); the other ranks of this job
    take no lock and learn the main rank's decisions by broadcast (distributed.py)."""
    if is_main():
        with cache_lock(path):
            yield
    else:
        yield


@contextmanager
def cache_lock(path: Path):
    """An exclusive lock beside a cache entry, so parallel jobs of a grid (SLURM, submitit) build a
    shared warmup or standard branch once while the others wait and then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
