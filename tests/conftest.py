"""Shared fixtures: hub-offline settings, composed configs, a small cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"


def compose(overrides=(), return_hydra_config=False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cat_experiments.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


# Shrunk sizes for end-to-end tests: seconds, not minutes.
TINY = [
    "dataset.n_train=256", "dataset.n_test=16", "warmup.max_steps=6", "warmup.per_device_train_batch_size=32",
    "objective.max_steps=4", "objective.per_device_train_batch_size=32", "objective.save_steps=2",
    "objective.logging_steps=2", "eval.pool_size=4", "eval.budgets=[1,2,4]", "logger=none",
    "model.n_embd=32", "model.n_head=2", "model.n_layer=1",
]
TINY_RL = ["objective.per_device_train_batch_size=8", "objective.num_generations=4", "objective.max_completion_length=8"]


@pytest.fixture
def tmp_cache(tmp_path):
    return f"cache_dir={tmp_path / 'cache'}"
