"""RL with the default RL settings learns (issue 12): on a short run every branch's training reward rises.

The RL defaults (conf/objective/rl.yaml: learning rate, batch, group size, loss) are used unchanged; only
the task is made easy enough for a short run to move: 1-digit addition after a 150-step CE warmup, where
the tiny model starts at a reward of about 0.23.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose

from cat_experiments.pipeline import Pipeline

pytestmark = pytest.mark.slow


def _rewards(branch_dir: Path) -> list[float]:
    last = max(branch_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [h["reward"] for h in history if "reward" in h]


def test_default_rl_settings_raise_the_training_reward_of_both_branches(tmp_path):
    defaults = compose(["objective=rl"]).objective
    cfg = compose(["strategy=majority", "objective=rl", "logger=none", f"cache_dir={tmp_path}",
                   "dataset.mix=[1+1]", "dataset.n_train=80", "dataset.n_test=20", "warmup.max_steps=150",
                   "warmup.per_device_train_batch_size=32", "objective.max_steps=100", "objective.logging_steps=5",
                   "objective.save_steps=100"])
    for key in ("learning_rate", "per_device_train_batch_size", "num_generations", "loss_type", "beta", "temperature"):
        assert cfg.objective[key] == defaults[key], key  # the defaults under test
    assert cfg.strategy.k == 3 and cfg.objective.all_wrong_penalty == 0.5  # the majority command's settings
    Pipeline(cfg).run("train")
    branches = sorted(p for p in (tmp_path / "branches").iterdir() if p.is_dir())
    assert {b.name.split("-")[0] for b in branches} == {"standard", "cat"}
    for branch in branches:
        rewards = _rewards(branch)
        assert len(rewards) == 20, branch.name
        first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
        # about +0.06 here; the noise of a 4-window mean (2,560 rollouts over 80 prompts) is about 0.01
        assert last > first + 0.03, (branch.name, rewards)
