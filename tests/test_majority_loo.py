"""The leave-one-out majority-vote advantage (strategy.estimator=loo; Tang et al., arXiv 2503.19595):
brute force over subsets, hand examples, exact unbiasedness on a tiny policy, config checks, a GRPO run."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
from conftest import compose

from cat_experiments.config import ConfigError, validate
from cat_experiments.evaluation.majority_vote import majority_at_k
from cat_experiments.strategies import Group, Majority, build_strategy, loo_majority_advantages, vote_value

# ---- an independent reference: every subset by itertools, f by the project's exact maj@k --------------


def ref_f(keys, correct_keys) -> float:
    """The plurality vote of the whole multiset `keys`: maj@k at k = |keys| (one draw, the pool itself),
    summed over the correct keys (as evaluation/sweep.py does); f(empty) = 0."""
    if not keys:
        return 0.0
    return sum(majority_at_k(list(keys), key, len(keys)) for key in correct_keys)


def ref_advantages(keys, correct, n) -> list[float]:
    m = len(keys)
    correct_keys = {k for k, ok in zip(keys, correct, strict=True) if ok and k is not None}
    out = []
    for i in range(m):
        diffs = []
        for subset in itertools.combinations(range(m), n):
            if i in subset:
                with_i = [keys[j] for j in subset]
                without = [keys[j] for j in subset if j != i]
                diffs.append(ref_f(with_i, correct_keys) - ref_f(without, correct_keys))
        out.append(sum(diffs) / len(diffs))
    return out


def test_matches_brute_force_over_all_subsets():
    rng = random.Random(0)
    seen_nonzero = 0
    for _ in range(250):
        m = rng.randint(1, 7)
        n = rng.randint(1, m)
        keys = [rng.choice(["a", "b", "c", "d", None]) for _ in range(m)]
        good = {"a"} if rng.random() < 0.8 else {"a", "b"}  # sometimes two distinct correct answers
        correct = [k in good for k in keys]
        got = loo_majority_advantages(keys, correct, n)
        assert got.dtype == torch.float64 and got.shape == (m,)
        assert got.tolist() == pytest.approx(ref_advantages(keys, correct, n), abs=1e-12), (keys, correct, n)
        seen_nonzero += bool(got.abs().sum() > 0)
    assert seen_nonzero > 50


def test_vote_value_tie_rule():
    assert vote_value([3, 2], [True, False]) == 1.0
    assert vote_value([2, 2], [True, False]) == 0.5  # tie split uniformly
    assert vote_value([2, 2, 2], [True, False, False]) == pytest.approx(1 / 3)
    assert vote_value([2, 2], [True, True]) == 1.0  # two correct keys
    assert vote_value([0, 0], [True, False]) == 0.0  # no valid answer
    assert vote_value([], []) == 0.0


# ---- hand-computed examples (M = 8 unless said) ---------------------------------------------------------


def adv(keys, n, good="A"):
    return loo_majority_advantages(list(keys), [k == good for k in keys], n).tolist()


def test_three_correct_against_a_four_strong_wrong_answer():
    # A x3 (correct), B x4, C x1, N = M = 8: B wins 4-3 (f = 0). Removing an A leaves 2-4: still 0, so a
    # correct sample cannot flip the vote and gets 0; removing a B gives a 3-3 tie (f = 1/2): -1/2; C: 0.
    assert adv("AAABBBBC", 8) == [0, 0, 0, -0.5, -0.5, -0.5, -0.5, 0]
    # N = 7: among the 7-subsets with an A, those that dropped a B are 3-3 ties: A flips them half-way
    # (the 7 subsets holding that A: 4 drop a B -> +1/2 each, 3 drop something else -> 0) = 2/7.
    a = adv("AAABBBBC", 7)
    assert a[:3] == pytest.approx([2 / 7] * 3) and a[3:7] == pytest.approx([-2 / 7] * 4) and a[7] == 0


def test_correct_samples_gain_only_where_they_can_flip_the_vote():
    assert adv("AAAABBBB", 8) == [0.5] * 4 + [-0.5] * 4  # 4-4 tie: each side breaks it
    assert adv("AAAABBBC", 8) == [0.5] * 4 + [0.0] * 4  # A wins 4-3; dropping an A ties 3-3
    assert adv("AAAAABBC", 8) == [0.0] * 8  # A wins by 3: no single sample matters


def test_m_larger_than_n_averages_the_subsets():
    # keys A, A, B (A correct), N = 2: for an A, {A, A} gives 1 - 1 = 0 and {A, B} gives 1/2 - 0, mean 1/4;
    # for B, {A, B} gives 1/2 - 1 twice, mean -1/2.
    assert adv("AAB", 2) == [0.25, 0.25, -0.5]
    assert adv("AAB", 1) == [1.0, 1.0, 0.0]  # N = 1: the reward itself (f(empty) = 0)


def test_invalid_answers_never_win():
    # None x3 and one A: A wins alone (invalid answers take slots, never votes)
    assert adv([None, None, None, "A"], 4) == [0, 0, 0, 1]
    # a correct rollout whose answer could not be parsed is still an invalid vote: 0, and no win
    got = loo_majority_advantages([None, "B", "B"], [True, False, False], 3).tolist()
    assert got == [0.0, 0.0, 0.0]
    assert adv([None, None, "B", "A"], 4) == [0, 0, -0.5, 0.5]  # 1-1 tie between the valid ones


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("key,good", [("A", "A"), ("B", "A"), (None, "A")])
def test_a_group_of_one_answer_gives_zero(n, key, good):
    assert adv([key] * 8, n, good) == [0.0] * 8


def test_too_many_subsets_and_bad_n_fail_clearly():
    with pytest.raises(ValueError, match="1 <= N <= M"):
        loo_majority_advantages(["A", "B"], [True, False], 3)
    with pytest.raises(ValueError, match="strategy.n or objective.num_generations"):
        loo_majority_advantages(["A"] * 64, [True] * 64, 32)


# ---- unbiasedness: the exact expectation of the estimator on a 3-answer policy ---------------------------


def exact_objective(theta, answers, good, n) -> float:
    """E[f(Y_1..Y_N)] under softmax(theta) over `answers`, by enumerating all |answers|^N draws."""
    p = np.exp(theta - theta.max())
    p /= p.sum()
    total = 0.0
    for draw in itertools.product(range(len(answers)), repeat=n):
        prob = float(np.prod(p[list(draw)]))
        total += prob * ref_f([answers[j] for j in draw], {good})
    return total


def expected_estimator(theta, answers, good, n, m) -> np.ndarray:
    """E[(N/M) sum_i A_i grad log pi(y_i)] over all |answers|^M groups; grad log softmax = e_y - p."""
    p = np.exp(theta - theta.max())
    p /= p.sum()
    eye = np.eye(len(answers))
    out = np.zeros(len(answers))
    for draw in itertools.product(range(len(answers)), repeat=m):
        keys = [answers[j] for j in draw]
        a = loo_majority_advantages(keys, [k == good for k in keys], n).numpy()
        score = sum(a[i] * (eye[draw[i]] - p) for i in range(m))
        out += float(np.prod(p[list(draw)])) * (n / m) * score
    return out


@pytest.mark.parametrize("answers", [("A", "B", "C"), ("A", "B", None)])
@pytest.mark.parametrize("n,m", [(3, 3), (1, 3), (2, 3), (2, 4), (3, 4)])
def test_estimator_is_unbiased_for_the_exact_majority_gradient(answers, n, m):
    theta = np.array([0.3, 0.7, -0.2])  # p(A) < p(B): a wrong answer leads, the vote is contested
    h = 1e-6
    fd = np.array([(exact_objective(theta + h * e, answers, "A", n) - exact_objective(theta - h * e, answers, "A", n))
                   / (2 * h) for e in np.eye(3)])
    got = expected_estimator(theta, answers, "A", n, m)
    assert np.abs(fd).max() > 1e-2
    np.testing.assert_allclose(got, fd, atol=1e-8)


# ---- strategy and config --------------------------------------------------------------------------------


def test_strategy_uses_the_leave_one_out_advantages():
    s = build_strategy({"name": "majority", "n": 3, "k": 2, "estimator": "loo", "clip": 10.0, "mean_normalize": True})
    assert isinstance(s, Majority) and s.replaces_advantages and s.describe() == "majority(n=3, estimator=loo)"
    g1 = Group(rewards=torch.zeros(4), correct=torch.tensor([True, True, False, False]), vote_keys=["A", "A", None, "B"])
    g2 = Group(rewards=torch.zeros(4), correct=torch.tensor([False] * 4), vote_keys=["C"] * 4)
    out = s.rl_advantages([g1, g2])
    assert out.tolist() == pytest.approx([*ref_advantages(["A", "A", None, "B"], [1, 1, 0, 0], 3), 0, 0, 0, 0])
    assert not build_strategy({"name": "majority", "n": 3, "k": 2}).replaces_advantages  # default: surrogate
    with pytest.raises(ValueError, match="vote keys"):
        s.rl_advantages([Group(rewards=torch.zeros(4), correct=torch.zeros(4, dtype=torch.bool))])
    with pytest.raises(ValueError, match="strategy.estimator"):
        Majority(8, 3, estimator="median")
    with pytest.raises(ValueError, match="objective=rl"):
        s.sft_loss(torch.tensor([-1.0], dtype=torch.float64))


@pytest.mark.parametrize("overrides,needles", [
    (["strategy=majority", "objective=rl", "strategy.estimator=median"], ["strategy.estimator='median'"]),
    (["strategy=majority", "objective=sft", "strategy.estimator=loo"], ["strategy.estimator='loo'", "objective=rl"]),
    (["strategy=pass_at_n", "objective=rl", "strategy.estimator=loo"], ["strategy.estimator='loo'", "majority"]),
    (["strategy=majority", "objective=rl", "strategy.estimator=loo", "strategy.n=16"],
     ["objective.num_generations=8", "strategy.n = 16"]),
])
def test_config_validation_names_the_key(overrides, needles):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    for needle in needles:
        assert needle in str(err.value)


def test_config_loo_with_rl_is_valid_and_builds():
    cfg = compose(["strategy=majority", "objective=rl", "strategy.estimator=loo"])
    validate(cfg)
    assert build_strategy(cfg.strategy).replaces_advantages
    assert compose(["strategy=majority"]).strategy.estimator == "surrogate"


# ---- a short GRPO run through the trainer -------------------------------------------------------------



def test_grpo_uses_the_loo_advantage_and_trains(tmp_path, tmp_path_factory):
    from conftest import tiny_length_grpo

    from cat_experiments.training.rl import CatGRPOTrainer

    task, model, tok, ds, args = tiny_length_grpo(tmp_path, tmp_path_factory)
    strategy = Majority(3, k=2, estimator="loo")
    trainer = CatGRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, task=task,
                             strategy=strategy, all_wrong_penalty=0.5)
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([dict(ds[i]) for i in range(2) for _ in range(4)])
    scores = trainer.task_reward.last_scores
    expected = []
    for g in range(2):
        chunk = scores[4 * g:4 * g + 4]
        loo = loo_majority_advantages([s.vote_key for s in chunk], [s.correct for s in chunk], 3)
        expected += (loo - 0.5 * float(not any(s.correct for s in chunk))).tolist()  # the penalty still applies
    assert torch.allclose(out["advantages"], torch.tensor(expected, dtype=out["advantages"].dtype), atol=1e-6)

    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss"]) for h in logs)
    assert all("loo_adv/nonzero_frac" in h for h in logs) and max(h["loo_adv/nonzero_frac"] for h in logs) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
