"""Protein tasks (method.md, Table 6): rewards at exact values, the tasks' rows, configs and plans."""

from __future__ import annotations

import math
import random

import pytest
from conftest import compose

from cat_experiments.config import validate
from cat_experiments.tasks import build_task
from cat_experiments.tasks.protein import (
    CONDITIONAL_PROMPT,
    ProteinConditionalTask,
    ProteinUnconditionalTask,
    conditional_pair,
    conditional_reward,
    hydrophobic_fraction,
    invalid_reason,
    invalid_shares,
    unconditional_reward,
)


def seq_with_h(h: float, length: int = 20) -> str:
    k = round(h * length)
    assert abs(k / length - h) < 1e-12
    return "L" * k + "D" * (length - k)


# ---- rewards -----------------------------------------------------------------------------------------------

def test_hydrophobic_fraction():
    assert hydrophobic_fraction("AILMFWYV") == 1.0
    assert hydrophobic_fraction("CDEGHKNPQRST") == 0.0
    assert hydrophobic_fraction("ADAD") == 0.5
    assert hydrophobic_fraction("AD\nAD ") == 0.5  # whitespace is not a residue
    assert hydrophobic_fraction("") == 0.0


def test_unconditional_reward_exact_values():
    # h = 0.35: 4 + 12 exp(-0.16/0.015)
    assert unconditional_reward(seq_with_h(0.35)) == pytest.approx(4 + 12 * math.exp(-0.16 / 0.015), abs=1e-12)
    assert unconditional_reward(seq_with_h(0.35)) == pytest.approx(4.00028, abs=1e-5)
    # h = 0.5: inside the penalty band
    want = 4 * math.exp(-0.0225 / 0.05) + 12 * math.exp(-0.0625 / 0.015) - 2
    assert unconditional_reward(seq_with_h(0.5)) == pytest.approx(want, abs=1e-12)
    assert unconditional_reward(seq_with_h(0.5)) == pytest.approx(0.73656, abs=1e-5)
    # h = 0.75: the rare mode
    want = 4 * math.exp(-0.16 / 0.05) + 12
    assert unconditional_reward(seq_with_h(0.75)) == pytest.approx(want, abs=1e-12)
    assert unconditional_reward(seq_with_h(0.75)) == pytest.approx(12.16305, abs=1e-5)
    # band edges are open: h = 0.45 and h = 0.60 carry no penalty
    assert unconditional_reward(seq_with_h(0.45)) == pytest.approx(
        4 * math.exp(-0.01 / 0.05) + 12 * math.exp(-0.09 / 0.015), abs=1e-12)
    assert unconditional_reward(seq_with_h(0.6)) == pytest.approx(
        4 * math.exp(-0.0625 / 0.05) + 12 * math.exp(-0.0225 / 0.015), abs=1e-12)


def test_unconditional_invalid_and_short():
    assert unconditional_reward("LLLLLLLLLX") == -5.0        # X is not one of the 20 amino acids
    assert unconditional_reward("LLLLLLLLLb") == -5.0        # "b" upper-cases to B, not one of the 20
    assert unconditional_reward("LLLLL:LLLL") == -5.0
    assert unconditional_reward("LLLLLLLLL") == -5.0         # length 9 < 10
    assert unconditional_reward("") == -5.0
    assert unconditional_reward("LLLLLLLLLD") != -5.0        # length 10 is enough
    # whitespace and newlines (ProtGPT2 every 60 residues) are stripped before scoring
    s = seq_with_h(0.75, 80)
    assert unconditional_reward(s[:60] + "\n" + s[60:] + "\n") == unconditional_reward(s)
    assert unconditional_reward(" LLLL LLLLL\n") == -5.0     # 9 residues after cleaning


def test_lower_case_is_upper_cased_before_scoring_as_the_authors_do():
    s = seq_with_h(0.75)
    assert unconditional_reward(s.lower()) == unconditional_reward(s) > 12
    assert unconditional_reward("lLlLlLlLlD") == unconditional_reward("LLLLLLLLLD")
    inp = seq_with_h(0.25)
    assert conditional_reward(inp, seq_with_h(0.75).lower()) == pytest.approx(10.0)
    assert hydrophobic_fraction("adAD") == 0.5


def test_invalid_reasons_name_why():
    assert invalid_reason("", 10) == "empty" and invalid_reason(" \n", 10) == "empty"  # ended at once
    assert invalid_reason("LLLLLLLLLX", 10) == "non_amino_acid"
    assert invalid_reason("LLL:", 10) == "non_amino_acid"   # the character is named before the length
    assert invalid_reason("LLLLLLLLL", 10) == "too_short"
    assert invalid_reason("llllllllld", 10) is None
    assert invalid_reason("LLLLL", 5) is None and invalid_reason("LLLL", 5) == "too_short"
    shares = invalid_shares(["", "LLLLLLLLLX", "LLL", "LLLLLLLLLL"], 10)
    assert shares == {"invalid_empty": 0.25, "invalid_non_amino_acid": 0.25, "invalid_too_short": 0.25,
                      "invalid_share": 0.75}
    t = ProteinUnconditionalTask(n_train=2)
    assert t.score(t.test_rows()[0], "LLL").invalid == "too_short" and t.score(t.test_rows()[0], "L" * 12).invalid is None
    assert set(t.invalid_reasons) == {"empty", "non_amino_acid", "too_short"}
    stats = t.sample_stats(t.test_rows(), [["", "LLLLLLLLLL", "LLLLLLLLLLLX", "LL"]])
    assert (stats["invalid_empty"], stats["invalid_non_amino_acid"], stats["invalid_too_short"]) == (0.25, 0.25, 0.25)
    c = ProteinConditionalTask(n_train=10, n_test=2)
    row = c.test_rows()[0]
    assert c.score(row, "LLLL").invalid == "too_short" and c.score(row, "LLLLL").invalid is None
    assert c.sample_stats([row], [["", "LLLLL"]])["invalid_empty"] == 0.5


def test_conditional_reward_exact_values():
    inp = seq_with_h(0.25)                                       # target h_out = 0.75
    assert conditional_reward(inp, seq_with_h(0.75)) == pytest.approx(10.0)
    assert conditional_reward(inp, seq_with_h(0.5)) == pytest.approx(10 * math.exp(-0.0625 / 0.05))
    # copy penalty: |h_out - h_in| < 0.1 and |h_in - 0.5| > 0.1
    assert conditional_reward(inp, seq_with_h(0.25)) == pytest.approx(10 * math.exp(-0.25 / 0.05) - 2)
    assert conditional_reward(inp, seq_with_h(0.3)) == pytest.approx(10 * math.exp(-0.2025 / 0.05) - 2)
    assert conditional_reward(inp, seq_with_h(0.4)) == pytest.approx(10 * math.exp(-0.1225 / 0.05))  # |diff| .15
    # raw float comparisons, as the authors': 0.35 - 0.25 is 0.0999...98 < 0.1 in floats, so it is penalised
    assert 0.35 - 0.25 < 0.1
    assert conditional_reward(inp, seq_with_h(0.35)) == pytest.approx(10 * math.exp(-0.16 / 0.05) - 2)
    # near h_in = 0.5 copying is not penalised (|h_in - 0.5| <= 0.1)
    assert conditional_reward(seq_with_h(0.5), seq_with_h(0.5)) == pytest.approx(10.0)
    assert conditional_reward(seq_with_h(0.6), seq_with_h(0.6)) == pytest.approx(10 * math.exp(-0.04 / 0.05))
    assert conditional_reward(seq_with_h(0.65), seq_with_h(0.65)) == pytest.approx(10 * math.exp(-0.09 / 0.05) - 2)


def test_conditional_invalid_and_short():
    inp = seq_with_h(0.25)
    assert conditional_reward(inp, "LLLL") == -5.0            # length 4 < 5
    assert conditional_reward(inp, "LLLLL") == pytest.approx(10 * math.exp(-0.0625 / 0.05))
    assert conditional_reward(inp, "LLLLB") == -5.0
    assert conditional_reward(inp, " LL\nLL L ") == conditional_reward(inp, "LLLLL")


# ---- tasks -------------------------------------------------------------------------------------------------

def test_unconditional_task_rows_and_score():
    t = ProteinUnconditionalTask(prompt_prefix="[BOS]", n_train=10)
    assert t.metrics == ("max@k",)
    assert [r["prompt"] for r in t.test_rows()] == ["[BOS]"] and len(t.train_rows()) == 10
    assert all(r["prompt"] == "[BOS]" for r in t.train_rows())
    s = t.score(t.test_rows()[0], seq_with_h(0.75))
    assert s.reward == pytest.approx(12.16305, abs=1e-5) and s.correct and s.vote_key is None
    s = t.score(t.test_rows()[0], seq_with_h(0.35))
    assert not s.correct and s.vote_key is None


def test_conditional_pairs_follow_the_recipe():
    rng = random.Random(0)
    for _ in range(200):
        seq, target = conditional_pair(rng)
        assert 10 <= len(seq) <= 19 and 10 <= len(target) <= 19
        n_h = sum(c in "AILMFWYV" for c in target)
        assert n_h == round((1 - hydrophobic_fraction(seq)) * len(target))
        assert conditional_reward(seq, target) > 8.0
    # the authors' draw: input letters uniform over the 20 amino acids (W would be ~1% at natural frequencies)
    rng = random.Random(1)
    letters = "".join(conditional_pair(rng)[0] for _ in range(4000))
    assert all(abs(letters.count(a) / len(letters) - 0.05) < 0.006 for a in "ACDEFGHIKLMNPQRSTVWY")
    targets = "".join(conditional_pair(rng)[1] for _ in range(4000))
    hydro = [c for c in targets if c in "AILMFWYV"]
    assert all(abs(hydro.count(a) / len(hydro) - 1 / 8) < 0.01 for a in "AILMFWYV")


def test_conditional_task_rows_are_seeded_and_held_out():
    a = ProteinConditionalTask(prompt_prefix="<|endoftext|>", n_train=300, n_test=150, data_seed=7)
    b = ProteinConditionalTask(prompt_prefix="<|endoftext|>", n_train=300, n_test=150, data_seed=7)
    assert a.train_rows() == b.train_rows() and a.test_rows() == b.test_rows()
    assert len(a.test_rows()) == 150 and len(a.train_rows()) == 300
    assert not {r["input"] for r in a.train_rows()} & {r["input"] for r in a.test_rows()}
    row = a.test_rows()[0]
    assert row["prompt"] == "<|endoftext|>" + CONDITIONAL_PROMPT.format(seq=row["input"])
    assert row["prompt"].endswith(" \n Output:") and "Input: " in row["prompt"]
    assert row["completion"].startswith(" ") and row["completion"][1] != " "  # the authors' prompt + " " + target
    assert a.score(row, row["completion"]).reward == conditional_reward(row["input"], row["completion"])
    assert a.metrics == ("max@k",)
    assert ProteinConditionalTask(n_train=300, n_test=150, data_seed=8).test_rows() != a.test_rows()


# ---- configs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,prefix", [("tiny_protein", "[BOS]"), ("protgpt2", "<|endoftext|>")])
@pytest.mark.parametrize("dataset", ["protein_unconditional", "protein_conditional"])
def test_datasets_take_the_models_prompt_prefix(model, prefix, dataset):
    cfg = compose([f"model={model}", f"dataset={dataset}", "objective=rl", "strategy=best_of_n"])
    validate(cfg)
    task = build_task(cfg.dataset)
    assert all(r["prompt"].startswith(prefix) for r in task.test_rows())


def test_presets_follow_the_paper_table():
    u = compose(["experiment=protein_unconditional"])
    validate(u)
    assert u.model.path == "nferruz/ProtGPT2" and u.model.lora is None and u.model.load_dtype == "float32"
    assert u.hardware.device == "cuda" and u.hardware.dtype == "float16" and not u.warmup.enabled
    o = u.objective
    assert (o.num_generations, o.per_device_train_batch_size // o.num_generations, o.max_steps) == (32, 4, 300)
    assert (o.learning_rate, o.beta, o.temperature, o.top_k, o.max_completion_length) == (1e-5, 0.3, 1.2, 50, 64)
    assert u.strategy.name == "best_of_n" and u.strategy.q_estimator == "history" and u.strategy.history_size == 4000
    assert u.eval.pool_size == 512 and list(u.eval.budgets) == [1, 2, 4, 8, 16, 32, 64]
    c = compose(["experiment=protein_conditional"])
    validate(c)
    assert c.warmup.enabled and c.warmup.max_steps == 60 and c.warmup.learning_rate == 5e-6
    assert c.warmup.num_examples == 2000 and c.objective.data_start == 2000
    o = c.objective
    assert (o.num_generations, o.max_steps, o.learning_rate, o.beta, o.temperature, o.max_completion_length) == \
        (25, 300, 2e-6, 0.05, 1.3, 32)
    assert c.strategy.q_estimator == "group"
    assert c.eval.pool_size == 32 and list(c.eval.budgets) == [1, 2, 4, 8, 16, 32]
    assert len(build_task(c.dataset).test_rows()) == 150
    # the authors' conditional conventions: top-k off, no BOS before the prompt, warmup 100 x 60 with wd 0.01
    assert o.top_k == 0 and c.eval.top_k == 0 and o.weight_decay == 0.01
    assert all(r["prompt"].startswith("Input: ") for r in build_task(c.dataset).test_rows())
    assert (c.warmup.per_device_train_batch_size, c.warmup.max_steps, c.warmup.weight_decay) == (100, 60, 0.01)


@pytest.mark.parametrize("preset", ["protein_unconditional", "protein_conditional"])
def test_presets_sweep_the_bon_grid_with_a_shared_standard_branch(preset):
    cfg = compose([f"experiment={preset}"], return_hydra_config=True)
    assert str(cfg.hydra.sweeper.params["strategy.n"]) == "2,4,8"
    assert cfg.baseline is True and cfg.strategy.name == "best_of_n"
    from cat_experiments.cache import branch_key, standard_strategy_cfg

    keys = set()
    for n in (2, 4, 8):
        c = compose([f"experiment={preset}", f"strategy.n={n}"])
        keys.add(branch_key(c, standard_strategy_cfg()))
    assert len(keys) == 1  # one standard run serves the whole grid


@pytest.mark.parametrize("preset", ["protein_unconditional", "protein_conditional",
                                    "protein_unconditional_tiny", "protein_conditional_tiny"])
def test_presets_print_their_plan_in_dry_mode(preset, capsys):
    from cat_experiments.main import run

    cfg = compose([f"experiment={preset}", "dry_run=true"])
    assert run(cfg) is None
    out = capsys.readouterr().out
    assert f"plan for experiment '{preset}'" in out and "branch standard: rl standard(N=1)" in out
    assert "branch cat: rl best_of_n(N=8)" in out


def test_tiny_protein_cache_key_includes_pretraining():
    from cat_experiments.models.tiny import _tiny_key

    a = compose(["model=tiny_protein"]).model
    b = compose(["model=tiny_protein", "model.pretrain.family_share=0.02"]).model
    c = compose(["model=tiny_protein", "model.pretrain.steps=401"]).model
    assert len({_tiny_key(a), _tiny_key(b), _tiny_key(c)}) == 3
    assert _tiny_key(a) == _tiny_key(compose(["model=tiny_protein", "seed=3"]).model)  # RL seeds share it


def test_warmup_weight_decay_reaches_the_trainer(tmp_path):
    from cat_experiments.training.args import sft_config

    c = compose(["experiment=protein_conditional"])
    assert sft_config(c.warmup, tmp_path, c).weight_decay == 0.01
    assert sft_config(compose([]).warmup, tmp_path, compose([])).weight_decay == 0.0  # the default: none
