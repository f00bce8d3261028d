"""Cache keys (cache.py): each artefact is keyed by exactly the settings that shape it.

The keys of the default and of every preset are pinned below, so a change that moves a key shows up
here as a diff: either a deliberate change (bump cache.KEY_VERSION and update the pins, saying why) or
a field that leaked into or out of a key.
"""

from __future__ import annotations

import json

import pytest
from conftest import compose

from cat_experiments.cache import (
    KEY_VERSION,
    branch_key,
    hashed,
    samples_fields,
    scores_fields,
    standard_strategy_cfg,
    warmup_key,
)

PRESETS = ["", "math_passn_sft", "math_majority_sft", "math_passn_rl", "math_majority_rl", "protein_unconditional",
           "protein_conditional", "protein_unconditional_tiny", "protein_conditional_tiny"]


def _cfg(preset: str, *overrides: str):
    return compose(([f"experiment={preset}"] if preset else []) + ["cache_dir=/nonexistent/cache", *overrides])


def keys_of(cfg) -> dict[str, str]:
    return {"warmup": warmup_key(cfg), "standard": branch_key(cfg, standard_strategy_cfg()),
            "cat": branch_key(cfg, cfg.strategy),
            "samples": hashed("samples", samples_fields(cfg, "branches/cat-x/final"))[0],
            "scores": hashed("scores", scores_fields(cfg))[0]}


# python -c "from tests.test_cache_keys import print_pins; print_pins()" prints these after a deliberate change
PINNED = {  # KEY_VERSION 3 (issue 21): every key moved once, deliberately
    "default": {"warmup": "55d787367ae5", "standard": "abf7abee35c4", "cat": "a231b4f1c3e2", "samples": "6970e7ca90a7", "scores": "1434a3d3b325"},
    "math_passn_sft": {"warmup": "5444fd70da14", "standard": "5245484d5cd3", "cat": "5fe41333679f", "samples": "e0166c13c3b1", "scores": "989ffe2dc02b"},
    "math_majority_sft": {"warmup": "a6afa3f81941", "standard": "9eeef727c98c", "cat": "056c2a04e4fc", "samples": "9f16b85c13e5", "scores": "144f4463a45b"},
    "math_passn_rl": {"warmup": "0100ab18b5a3", "standard": "9247068164b6", "cat": "c263687a2937", "samples": "8206ed8d0093", "scores": "4e1ac92bb65d"},
    "math_majority_rl": {"warmup": "fd3f5783661b", "standard": "9b756939a7ff", "cat": "c4b015a73f06", "samples": "b62e689bdeaa", "scores": "92c61e63345f"},
    "protein_unconditional": {"warmup": "796f97c4c65f", "standard": "bb558ebe1ddf", "cat": "e2985dcdcd41", "samples": "8d96c0691db1", "scores": "4f24b1128dcd"},
    "protein_conditional": {"warmup": "a99bd912af37", "standard": "5106dcc6c03d", "cat": "9bb0da1e650c", "samples": "28fe5cfbb5bd", "scores": "f1a3dc2dfaa8"},
    "protein_unconditional_tiny": {"warmup": "d2e50caf1e98", "standard": "adf45ac1f58e", "cat": "2bd0996f5f0c", "samples": "1a6a2729b77f", "scores": "daf592084ff6"},
    "protein_conditional_tiny": {"warmup": "2b82e39c080c", "standard": "5dd4ba511c14", "cat": "027b0f02b2ac", "samples": "28fe5cfbb5bd", "scores": "f1a3dc2dfaa8"},
}


def print_pins() -> None:  # pragma: no cover - a maintenance helper
    import sys

    sys.path.insert(0, "tests")
    print(json.dumps({p or "default": keys_of(_cfg(p)) for p in PRESETS}, indent=4))


@pytest.mark.parametrize("preset", PRESETS)
def test_keys_are_pinned(preset):
    assert KEY_VERSION == 3
    assert keys_of(_cfg(preset)) == PINNED[preset or "default"]


def test_training_keys_ignore_the_test_set_logging_and_saving():
    base = keys_of(_cfg(""))
    for change in ["dataset.n_test=100", "warmup.save_steps=7", "warmup.logging_steps=3", "objective.save_steps=9",
                   "objective.logging_steps=5", "eval.budgets=[1,2]", "eval.batch_size=16", "eval.num_problems=10",
                   "hardware.gradient_checkpointing=true", "run_name=other", "logger=none"]:
        moved = keys_of(_cfg("", change))
        assert (moved["warmup"], moved["standard"], moved["cat"]) == (base["warmup"], base["standard"], base["cat"]), change
    # a test-set change on the MATH preset keeps the 7B warmup and branches
    math = keys_of(_cfg("math_passn_sft"))
    other_test = keys_of(_cfg("math_passn_sft", "dataset.test_path=/data/other.jsonl", "dataset.test_split=validation"))
    assert other_test["warmup"] == math["warmup"] and other_test["cat"] == math["cat"]
    assert other_test["samples"] != math["samples"]  # but the pools are of other prompts


def test_keys_follow_what_shapes_the_weights():
    base = keys_of(_cfg(""))
    for change in ["hardware.dtype=bfloat16", "hardware.load_in_4bit=true", "model.lora.r=8", "seed=1",
                   "warmup.learning_rate=1e-4", "dataset.n_train=100"]:
        if change == "model.lora.r=8":
            moved = keys_of(_cfg("math_passn_sft", change))
            assert moved["warmup"] != keys_of(_cfg("math_passn_sft"))["warmup"], change
            continue
        assert keys_of(_cfg("", change))["warmup"] != base["warmup"], change
    assert keys_of(_cfg("", "objective.learning_rate=1e-4"))["cat"] != base["cat"]
    assert keys_of(_cfg("", "objective.learning_rate=1e-4"))["warmup"] == base["warmup"]


def test_the_grader_keys_rl_branches_and_scores_only():
    sft, sft_paper = keys_of(_cfg("math_passn_sft")), keys_of(_cfg("math_passn_sft", "dataset.grader=paper"))
    assert (sft_paper["warmup"], sft_paper["cat"], sft_paper["samples"]) == (sft["warmup"], sft["cat"], sft["samples"])
    assert sft_paper["scores"] != sft["scores"]
    rl, rl_paper = keys_of(_cfg("math_passn_rl")), keys_of(_cfg("math_passn_rl", "dataset.grader=paper"))
    assert rl_paper["warmup"] == rl["warmup"] and rl_paper["cat"] != rl["cat"]  # RL rewards come from the grader


def test_samples_key_follows_sampling_not_scoring():
    base = keys_of(_cfg(""))["samples"]
    for change in ["eval.temperature=0.7", "eval.top_p=0.9", "eval.top_k=5", "eval.pool_size=32",
                   "eval.max_new_tokens=20", "seed=3", "hardware.dtype=bfloat16"]:
        assert keys_of(_cfg("", change))["samples"] != base, change
    for change in ["eval.budgets=[1,2,4]", "eval.batch_size=7", "eval.num_problems=5", "eval.problems_per_part=3",
                   "eval.eval_warmup=false"]:
        assert keys_of(_cfg("", change))["samples"] == base, change


def test_the_version_salt_moves_every_key(monkeypatch):
    import cat_experiments.cache as cache

    before = keys_of(_cfg(""))
    monkeypatch.setattr(cache, "KEY_VERSION", KEY_VERSION + 1)
    after = keys_of(_cfg(""))
    assert all(before[k] != after[k] for k in before)
