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
SHARED = ROOT.parent / "shared"  # optional: a user's clone has no ../shared
# The MATH-500 test set, shipped with the tests (tests/fixtures/README.md: source and license)
MATH500 = ROOT / "tests" / "fixtures" / "math500_test.jsonl"


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


def _files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()} if path.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def no_test_writes_into_the_repositorys_outputs():
    """Tests put Hydra run dirs and caches under tmp_path (hydra.run.dir=, hydra.sweep.dir=, cache_dir=):
    at the end of the session the repository's own outputs/ has gained no file."""
    outputs = ROOT / "outputs"
    before = _files_under(outputs)
    yield
    new = sorted(str(p.relative_to(ROOT)) for p in _files_under(outputs) - before)
    assert not new, (f"tests wrote {len(new)} file(s) into {outputs}: {new[:8]}; give the test "
                     "hydra.run.dir=/hydra.sweep.dir=/cache_dir= under tmp_path")


@pytest.fixture
def tmp_cache(tmp_path):
    return f"cache_dir={tmp_path / 'cache'}"


def tiny_length_grpo(tmp_path, tmp_path_factory):
    """A 1-layer tiny GPT-2 and a task whose 0/1 rewards vary even for a random model (correct when the
    completion's length is 2 mod 3; the vote key is the length), with TRL arguments for 3 GRPO steps of
    2 prompts x 4 rollouts: (task, model, tokenizer, dataset, GRPOConfig)."""
    from types import SimpleNamespace

    from trl import GRPOConfig

    from cat_experiments.models import load_model_and_tokenizer
    from cat_experiments.tasks.arithmetic import ArithmeticTask
    from cat_experiments.tasks.base import Score
    from cat_experiments.training.data import rl_dataset

    class LengthTask(ArithmeticTask):
        def score(self, row, completion):
            r = float(len(completion) % 3 == 2)
            return Score(reward=r, correct=bool(r), vote_key=str(len(completion)))

    model_cfg = SimpleNamespace(name="tiny", builder="tiny_gpt2", chars="0123456789+-*/=()\\{}boxed .,\n", n_layer=1,
                                n_embd=32, n_head=2, n_positions=64, init_seed=0, load_in_4bit=False, lora=None,
                                gradient_checkpointing=False, trust_remote_code=False, path=None)
    hw = SimpleNamespace(device="cpu", dtype="float32", load_in_4bit=False, gradient_checkpointing=False)
    task = LengthTask(op="+", digits=1, n_train=64, n_test=8)
    model, tok = load_model_and_tokenizer(model_cfg, hw, tmp_path_factory.getbasetemp() / "cache")
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                      report_to="none", seed=3, use_cpu=True, gradient_checkpointing=False, disable_tqdm=True,
                      loss_type="luspo", log_completions=False, bf16=False)
    return task, model, tok, ds, args
