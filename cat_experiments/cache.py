"""The cache: keys, paths and locks of every expensive artefact.

An artefact lives under ``cache_dir`` at a key hashed from an *allowlist*: exactly the settings that
shape it, so a grid's branches share one warmup, a rerun skips finished work, a killed run resumes
from its last checkpoint, and changing what does not shape an artefact (the test set, logging or
save steps, budgets, the grader of an SFT run) keeps it:

    cache_dir/models/<builder>-<key>/          tiny models (models/tiny.py)
    cache_dir/warmup/<warmup_key>/             checkpoints, final/ (+ DONE when complete)
    cache_dir/branches/<name>-<branch_key>/    checkpoints, final/ (+ DONE)
    cache_dir/samples/<samples_key>/           evaluation pools (evaluation/store.py) and their scores

Every entry holds ``key.json``: the hashed fields and their values. ``KEY_VERSION`` salts every key:
bump it when a change to the code changes what an artefact would hold (a semantic fix), so old
checkpoints and pools are not reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import StrategyConfig, process_batch
from .distributed import is_main, world_size

DONE = "DONE"
KEY_JSON = "key.json"
log = logging.getLogger("cat_experiments")

# Bump on a semantic change (v2, 2026-12-06: allowlisted keys, stored samples; every key changed once.
# v3, 2026-12-06, issue 21: RL scores left-padded prompts at their sampling positions, the advantage clip
# comes before the CAT weight, protein validity upper-cases and the conditional pairs are drawn as the
# authors draw them; none of these is a config field, so old protein checkpoints and pools would be reused).
KEY_VERSION = 3

# Fields that never shape a trained model (logging, checkpoint cadence, memory knobs, labels).
_MODEL_IGNORED = ("name", "gradient_checkpointing")
_TRAINING_IGNORED = ("save_steps", "logging_steps", "enabled", "vllm_mode", "vllm_gpu_memory_utilization")
# Dataset fields that shape only the test split, only scoring or only the plan.
DATASET_TEST_ONLY = ("n_test", "test_path", "test_hub_id", "test_hub_configs", "test_split")
DATASET_SCORING = ("grader",)
DATASET_PLAN_ONLY = ("tokens_per_example",)
# Evaluation settings that shape the pools (not budgets, batch size, which problems, memory).
EVAL_SAMPLING = ("pool_size", "temperature", "top_p", "top_k", "max_new_tokens", "engine", "vllm_max_model_len")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _without(node: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in _plain(node).items() if k not in names}


def config_key(*parts: Any) -> str:
    """A short stable hash of plain values (what an artefact depends on, nothing else)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def hashed(kind: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(key, the fields as key.json stores them) of an artefact of ``kind``."""
    fields = {"kind": kind, "version": KEY_VERSION, **{k: _plain(v) for k, v in fields.items()}}
    return config_key(fields), fields


def write_key_json(entry: Path, fields: dict[str, Any]) -> None:
    """``key.json`` in a cache entry (main rank): what its key hashes, for a person reading the cache."""
    if is_main():
        entry.mkdir(parents=True, exist_ok=True)
        tmp = entry / (KEY_JSON + ".tmp")
        tmp.write_text(json.dumps(fields, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, entry / KEY_JSON)


def _batch_keyed(section: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """A training section as its key sees it: the *global* batch stands where the config's batch is, so
    the number of processes enters the key only when it changes the global batch
    (hardware.keep_global_batch=false)."""
    world = world_size() if world_size() > 1 else int(cfg.hardware.get("num_processes") or 1)
    global_batch = process_batch(section, cfg.hardware, world)[2]
    plain = _without(section, _TRAINING_IGNORED)
    plain["per_device_train_batch_size"] = global_batch // int(section.gradient_accumulation_steps)
    return plain


def model_fields(cfg: DictConfig) -> dict[str, Any]:
    """What shapes the weights a stage starts from and trains: the model section (less labels and
    memory knobs) and the effective dtype and 4-bit loading."""
    four_bit = bool(cfg.model.load_in_4bit or cfg.hardware.get("load_in_4bit", False))  # as models.loading.wants_4bit
    return {"model": _without(cfg.model, _MODEL_IGNORED), "dtype": cfg.model.get("load_dtype") or cfg.hardware.dtype,
            "load_in_4bit": four_bit}


def training_data_fields(cfg: DictConfig, rl: bool) -> dict[str, Any]:
    """The dataset as training sees it: not the test split or the plan's numbers; the grader only for RL
    (it computes the rewards)."""
    drop = DATASET_TEST_ONLY + DATASET_PLAN_ONLY + (() if rl else DATASET_SCORING)
    return _without(cfg.dataset, drop)


def warmup_fields(cfg: DictConfig) -> dict[str, Any]:
    return {**model_fields(cfg), "dataset": training_data_fields(cfg, rl=False),
            "warmup": _batch_keyed(cfg.warmup, cfg), "seed": int(cfg.seed)}


def warmup_key(cfg: DictConfig) -> str:
    return hashed("warmup", warmup_fields(cfg))[0]


def standard_strategy_cfg() -> DictConfig:
    """The baseline branch's strategy: canonical, so every branch of a grid shares one standard run."""
    return OmegaConf.structured(StrategyConfig(name="standard", n=1))


# Strategy fields added after KEY_VERSION 2, with the value that means "as before": left out of the key at that
# value, so every earlier key (and cached branch) stays valid; any other value enters the key.
STRATEGY_ADDED_DEFAULTS = {"k_schedule": None}


def strategy_keyed(strategy_cfg: Any) -> dict[str, Any]:
    """The strategy section as its branch key sees it (STRATEGY_ADDED_DEFAULTS dropped at their defaults)."""
    return {k: v for k, v in _plain(strategy_cfg).items()
            if not (k in STRATEGY_ADDED_DEFAULTS and v == STRATEGY_ADDED_DEFAULTS[k])}


def branch_fields(cfg: DictConfig, strategy_cfg: DictConfig) -> dict[str, Any]:
    rl = cfg.objective.name == "rl"
    start = warmup_key(cfg) if cfg.warmup.enabled else "base"
    return {**model_fields(cfg), "dataset": training_data_fields(cfg, rl=rl), "start": start,
            "strategy": strategy_keyed(strategy_cfg), "objective": _batch_keyed(cfg.objective, cfg),
            "seed": int(cfg.seed)}


def branch_key(cfg: DictConfig, strategy_cfg: DictConfig) -> str:
    return hashed("branch", branch_fields(cfg, strategy_cfg))[0]


def samples_fields(cfg: DictConfig, checkpoint: str, split: str = "test") -> dict[str, Any]:
    """What shapes an evaluation pool: the checkpoint (relative to the cache when inside it), the prompts
    (the dataset less its grader, the split, the chat template), the sampling settings, the loading
    dtype and 4-bit, and the seed. Not budgets, estimators, graders, batch size or the problem count."""
    root, path = cache_root(cfg).resolve(), Path(checkpoint)
    if path.exists() and path.resolve().is_relative_to(root):
        checkpoint = str(path.resolve().relative_to(root))
    return {"checkpoint": checkpoint, "split": split, "dataset": _without(cfg.dataset, DATASET_SCORING + DATASET_PLAN_ONLY),
            "chat_template": bool(cfg.model.use_chat_template),
            "sampling": {k: cfg.eval.get(k) for k in EVAL_SAMPLING}, "seed": int(cfg.seed),
            "dtype": cfg.model.get("load_dtype") or cfg.hardware.dtype,
            "load_in_4bit": model_fields(cfg)["load_in_4bit"]}


def scores_fields(cfg: DictConfig) -> dict[str, Any]:
    """What shapes the scores of stored completions: the whole dataset section (the grader, the target
    field and the rewards' settings all live there)."""
    return {"dataset": _without(cfg.dataset, DATASET_PLAN_ONLY)}


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


# A lock wait polls every LOCK_POLL_S and logs who holds the lock every LOCK_LOG_EVERY_S (tests shorten both).
LOCK_POLL_S = 2.0
LOCK_LOG_EVERY_S = 300.0


def _holder_note() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def lock_holder(lock_path: Path) -> str:
    """Who holds a cache lock, from the note its holder wrote into the lock file."""
    try:
        note = json.loads(Path(lock_path).read_text())
    except (OSError, ValueError):
        return "a process that left no note"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["since"]))
    job = f", SLURM job {note['slurm_job']}" if note.get("slurm_job") else ""
    return (f"host {note['host']} pid {note['pid']}{job}, since {since} "
            f"({(time.time() - note['since']) / 60:.0f} min ago)")


@contextmanager
def cache_lock(path: Path):
    """An exclusive lock beside a cache entry, so parallel jobs of a grid (SLURM, submitit) build a
    shared warmup or standard branch once while the others wait and then reuse it. The holder writes
    who it is into the lock file, and a waiter logs that every LOCK_LOG_EVERY_S, so a job waiting for
    another job's warmup does not look hung."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as f:  # not "w": opening must not erase the holder's note
        _wait_for_lock(f, lock_path)
        try:
            f.truncate(0)
            f.write(json.dumps(_holder_note()))
            f.flush()
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def _wait_for_lock(f, lock_path: Path) -> None:
    start = next_log = time.monotonic()
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now >= next_log:
            log.info("waiting for the lock %s (%.0f min so far): held by %s", lock_path, (now - start) / 60,
                     lock_holder(lock_path))
            next_log = now + LOCK_LOG_EVERY_S
        time.sleep(LOCK_POLL_S)
