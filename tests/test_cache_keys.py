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
PINNED = {
    "default": {"warmup": "53e194a8fbbb", "standard": "47c84d00f287", "cat": "df7c62f38eb3", "samples": "56e02129f668", "scores": "b81f2b481354"},
    "math_passn_sft": {"warmup": "189e2dac7c72", "standard": "9fa4a5b27a4e", "cat": "9dff6a8ef8d9", "samples": "1ce8f4373a97", "scores": "7d98048b91e0"},
    "math_majority_sft": {"warmup": "f5a78569e518", "standard": "06559f175166", "cat": "642b15048076", "samples": "4196f6c4f523", "scores": "d0ea6e3466f5"},
    "math_passn_rl": {"warmup": "80ebad3622c5", "standard": "1c8902f7d6ce", "cat": "24488a67eab4", "samples": "d8993c2dc16c", "scores": "b662f0d24eda"},
    "math_majority_rl": {"warmup": "a63e506c09d0", "standard": "3e373596da3c", "cat": "2b701d60137f", "samples": "bc9657b8d87f", "scores": "af3311e21213"},
    "protein_unconditional": {"warmup": "2de94993c6c6", "standard": "0bc8c5616151", "cat": "c3e0fcbfe7c0", "samples": "d7a0c6ae99ee", "scores": "ee17e42dd1d5"},
    "protein_conditional": {"warmup": "d098d02758c7", "standard": "133a6118dd2e", "cat": "34a203b2876d", "samples": "a804fd514fa7", "scores": "83f764c9e73b"},
    "protein_unconditional_tiny": {"warmup": "e8682b6bf9a0", "standard": "bcef7adb2d47", "cat": "a82b36a21942", "samples": "dbd0331f59d1", "scores": "6ea6b676e14b"},
    "protein_conditional_tiny": {"warmup": "91d4eca94d04", "standard": "d5bc9c857faf", "cat": "0817040a643e", "samples": "0ea5a50d24b2", "scores": "0acddc802594"},
}


def print_pins() -> None:  # pragma: no cover - a maintenance helper
    import sys

    sys.path.insert(0, "tests")
    print(json.dumps({p or "default": keys_of(_cfg(p)) for p in PRESETS}, indent=4))


@pytest.mark.parametrize("preset", PRESETS)
def test_keys_are_pinned(preset):
    assert KEY_VERSION == 2
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
