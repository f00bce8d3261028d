"""Other test-time-aware RL objectives beside CAT (issue 22; docs/method.md "Other test-time-aware objectives"):
the registry (strategies/registry.py), and every estimator's formula checked EXACTLY.

Exactness: a 3-outcome categorical policy pi = softmax(theta) draws the M rollouts of a prompt; enumerating all
3^M outcome sequences gives the exact expectation of the update (1/M) sum_i A_i grad log pi(y_i) (TRL's mean over
completions), which must equal the gradient of the method's target (autograd) times the stated constant. Each
identity is also shown to FAIL for a perturbed formula, so the tests can tell a wrong one.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import MATH500, compose

from cat_experiments.config import ConfigError, validate
from cat_experiments.strategies import (
    BestOfN,
    Group,
    PassAtN,
    Standard,
    build_strategy,
    estimator_names,
    pass_at_n_unbiased_weight,
    strategy_names,
)
from cat_experiments.strategies.best_sample import best_sample_advantages
from cat_experiments.strategies.maxrl import maxrl_advantages, maxrl_objective
from cat_experiments.strategies.passk_training import passk_training_advantages
from cat_experiments.strategies.pkpo import (
    comb,
    max_at_k_estimate,
    pass_at_k_estimate,
    pkpo_advantages,
    pkpo_effective_rewards,
    pkpo_loo_minus_one,
    pkpo_pass_at_k_rewards,
)

f64 = torch.float64
THETA = torch.tensor([0.3, -0.5, 0.1], dtype=f64)  # pi = softmax(THETA): about (0.42, 0.19, 0.34)
CORRECT = (False, False, True)  # outcome 2 is the correct answer: p = pi[2]
REWARDS = (0.0, 1.0, 3.0)  # continuous rewards of the three outcomes (max@k)
TIED = (1.0, 2.5, 2.5)  # two outcomes share the top reward


# ---- exact enumeration ------------------------------------------------------------------------------------

def expected_update(advantages, m: int, rewards=REWARDS, correct=CORRECT, theta=THETA) -> torch.Tensor:
    """E over all 3^m outcome sequences of (1/m) sum_i A_i grad_theta log pi(y_i); ``advantages(group)`` -> A [m]."""
    pi = torch.softmax(theta, 0)
    eye = torch.eye(3, dtype=f64)
    total = torch.zeros(3, dtype=f64)
    for ys in itertools.product(range(3), repeat=m):
        prob = torch.prod(pi[list(ys)])
        group = Group(rewards=torch.tensor([rewards[y] for y in ys], dtype=f64),
                      correct=torch.tensor([correct[y] for y in ys]))
        a = torch.as_tensor(advantages(group), dtype=f64)
        total += prob * sum(a[i] * (eye[y] - pi) for i, y in enumerate(ys))
    return total / m


def grad_of(target) -> torch.Tensor:
    theta = THETA.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(target(torch.softmax(theta, 0)), theta)
    return g


def pass_at(k):
    return lambda pi: 1 - (1 - pi[2]) ** k


def max_at(k, rewards=REWARDS):
    """E[max of k i.i.d. rewards] = sum_v v (F(v)^k - F(v-)^k) over the distinct reward values."""
    def target(pi):
        values = sorted(set(rewards))
        cdf = [sum(pi[j] for j in range(3) if rewards[j] <= v) for v in values]
        return sum(v * (cdf[i] ** k - (cdf[i - 1] ** k if i else 0)) for i, v in enumerate(values))
    return target


def via(strategy):
    return lambda g: strategy.rl_advantages([g])


def brute_subsets(g, k):
    """(s_i, s_i^(loo-1)) by enumerating every k-subset of the group (PKPO's definitions)."""
    n = len(g)
    subsets = list(itertools.combinations(range(n), k))
    s = [sum(max(g[j] for j in sub) for sub in subsets if i in sub) / len(subsets) for i in range(n)]
    loo1 = [sum(max(g[j] for j in sub) - (max((g[j] for j in sub if j != i), default=0.0))
                for sub in subsets if i in sub) / len(subsets) for i in range(n)]
    return torch.tensor(s, dtype=f64), torch.tensor(loo1, dtype=f64)


# ---- PKPO: pass@k and max@k -------------------------------------------------------------------------------

@pytest.mark.parametrize("m,k", [(4, 1), (4, 2), (4, 3), (4, 4), (5, 3)])
def test_pkpo_pass_at_k_is_exactly_unbiased(m, k):
    strategy = build_strategy({"name": "pass_at_n", "n": k, "estimator": "pkpo"})
    got = expected_update(via(strategy), m)
    torch.testing.assert_close(got, grad_of(pass_at(k)), rtol=1e-10, atol=1e-12)
    if k > 1:  # the update is not the gradient of a neighbouring target
        assert not torch.allclose(got, grad_of(pass_at(k - 1)), atol=1e-6)


@pytest.mark.parametrize("rewards", [REWARDS, TIED])
@pytest.mark.parametrize("m,k", [(4, 1), (4, 2), (4, 3), (4, 4), (5, 2)])
def test_pkpo_max_at_k_is_exactly_unbiased(rewards, m, k):
    strategy = build_strategy({"name": "best_of_n", "n": k, "estimator": "pkpo"})
    got = expected_update(via(strategy), m, rewards=rewards)
    torch.testing.assert_close(got, grad_of(max_at(k, rewards)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m,k", [(4, 2), (5, 3)])
def test_pkpo_paper_effective_rewards_and_a_wrong_formula(m, k):
    """The paper's binary effective rewards before the baseline, k/n (correct) and (k/n) rho(n-1, c, k-1) (wrong),
    give E[sum_i r_i grad log pi(y_i)] = grad pass@k; with rho(n-1, c, k) for a wrong sample they do not."""
    def paper(g):
        return pkpo_pass_at_k_rewards(g.correct, k) * m  # x m: expected_update divides by m

    def wrong(g):
        r = g.correct.to(f64)
        c = int(r.sum())
        bad = k / m * pass_at_k_estimate(m - 1, c, k) if c < m else 0.0
        return torch.where(r > 0, torch.full_like(r, k / m), torch.full_like(r, bad)) * m

    truth = grad_of(pass_at(k))
    torch.testing.assert_close(expected_update(paper, m), truth, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(expected_update(wrong, m), truth, atol=1e-4)
    for c in range(m + 1):  # the closed form is the general s_i on 0/1 rewards
        r = torch.tensor([1.0] * c + [0.0] * (m - c), dtype=f64)
        torch.testing.assert_close(pkpo_pass_at_k_rewards(r, k), pkpo_effective_rewards(r, k))


def test_pkpo_sorted_formulas_match_the_subset_definitions():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 5, 6):
        for trial in range(3):
            g = torch.randn(n, generator=gen, dtype=f64)
            if trial == 2:
                g[1] = g[0]  # a tie
            for k in range(1, n + 1):
                s, loo1 = brute_subsets(g.tolist(), k)
                torch.testing.assert_close(pkpo_effective_rewards(g, k), s)
                subsets = list(itertools.combinations(g.tolist(), k))
                assert max_at_k_estimate(g, k) == pytest.approx(sum(map(max, subsets)) / len(subsets))
                if k >= 2:
                    torch.testing.assert_close(pkpo_loo_minus_one(g, k), loo1)
    # a worked example: rewards 0.1 .. 0.9, k = 2 (s_i = ((i-1) g_(i) + sum_{j>i} g_(j)) / C(5, 2))
    s = pkpo_effective_rewards(torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7], dtype=f64), 2)
    assert s.tolist() == pytest.approx([0.36, 0.24, 0.26, 0.24, 0.30])
    assert max_at_k_estimate([0.1, 0.3, 0.5, 0.7, 0.9], 2) == pytest.approx(0.7)


def test_pkpo_binary_is_the_reward_times_cats_unbiased_pass_weight():
    """For 0/1 rewards s^(loo-1) is 0 for a wrong rollout and (k/n) C(n-c, k-1)/C(n-1, k-1) for a correct one:
    M s^(loo-1) = r_i x CAT's unbiased raw Pass@k weight k C(M-1-c_-i, k-1)/C(M-1, k-1) (strategies/pass_at_n.py)."""
    m = 8
    for k in (2, 3, 8):
        for c in range(m + 1):
            r = torch.tensor([1.0] * c + [0.0] * (m - c), dtype=f64)
            a = pkpo_advantages(r, k)
            assert torch.all(a[c:] == 0)
            expect = k * comb(m - c, k - 1) / comb(m - 1, k - 1)
            assert a[:c].tolist() == pytest.approx([expect] * c)
            cat = pass_at_n_unbiased_weight(r.sum() - r, m - 1, k)
            torch.testing.assert_close(a, r * cat)


def test_pkpo_k1_is_the_leave_one_out_mean_baseline():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0], dtype=f64)
    a = pkpo_advantages(r, 1)
    torch.testing.assert_close(a, r - (r.sum() - r) / 4)
    torch.testing.assert_close(a, (r - r.mean()) * 5 / 4)  # Dr. GRPO's centred reward, times M/(M-1)
    cont = torch.tensor([0.5, -2.0, 3.0], dtype=f64)
    torch.testing.assert_close(pkpo_advantages(cont, 1), (cont - cont.mean()) * 3 / 2)


def test_pkpo_k_schedule_follows_the_step():
    s = build_strategy({"name": "pass_at_n", "n": 4, "estimator": "pkpo", "k_schedule": [8, 1]})
    assert s.current_k() == 8  # before the trainer reports progress
    ks = []
    for step in range(15):
        s.set_progress(step, 15)
        ks.append(s.current_k())
    assert ks[0] == 8 and ks[-1] == 1 and ks == sorted(ks, reverse=True)
    s.set_progress(7, 15)  # t = 1/2: 4.5 rounds up
    assert s.current_k() == 5
    g = Group(rewards=torch.zeros(8, dtype=f64), correct=torch.tensor([True, False] * 4))
    torch.testing.assert_close(s.rl_advantages([g]), pkpo_advantages(g.correct.to(f64), 5))
    assert s.describe() == "pass_at_n(n=4, estimator=pkpo, k=8->1)"
    with pytest.raises(ValueError, match="k_schedule"):
        build_strategy({"name": "pass_at_n", "n": 4, "estimator": "maxrl", "k_schedule": [4, 2]})
    with pytest.raises(ValueError, match="at least k rollouts"):
        s.set_progress(0, 15)
        s.rl_advantages([Group(rewards=torch.zeros(4), correct=torch.ones(4, dtype=torch.bool))])


# ---- MaxRL ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n", [(4, 1), (4, 2), (4, 4), (5, 3)])
def test_maxrl_without_baseline_is_exactly_the_truncated_likelihood_gradient(m, n):
    """E[(1/M) sum_i A_i grad log pi] = grad J_n, J_n = -sum_{j<=n} (1-p)^j/j; weighting by 1/(K+1) is wrong."""
    strategy = build_strategy({"name": "pass_at_n", "n": n, "estimator": "maxrl_no_baseline"})
    truth = grad_of(lambda pi: maxrl_objective(pi[2], n))
    torch.testing.assert_close(expected_update(via(strategy), m), truth, rtol=1e-10, atol=1e-12)

    def off_by_one(g):
        r = g.correct.to(f64)
        return r * n / (r.sum() + 1)  # m = n only, for the perturbation

    if m == n:
        assert not torch.allclose(expected_update(off_by_one, m), truth, atol=1e-4)


@pytest.mark.parametrize("m,n", [(4, 2), (4, 4), (5, 3)])
def test_maxrl_mean_baseline_is_exactly_the_gradient_of_j_n_minus_1(m, n):
    """The mean baseline is dropped with the K = 0 groups, so it is not free: the estimator is exactly unbiased for
    grad J_(n-1), not grad J_n (the difference is grad (1-p)^n / n)."""
    strategy = build_strategy({"name": "pass_at_n", "n": n, "estimator": "maxrl"})
    got = expected_update(via(strategy), m)
    torch.testing.assert_close(got, grad_of(lambda pi: maxrl_objective(pi[2], n - 1)), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, grad_of(lambda pi: maxrl_objective(pi[2], n)), atol=1e-4)


def test_maxrl_at_m_equal_n_is_the_papers_mean_normalised_advantage():
    """M = n: (r - mean r) / mean r, i.e. n/K - 1 for a success, -1 for a failure, 0 when K = 0; without the
    baseline n/K and 0. n = 1 without baseline is REINFORCE (A = r)."""
    for c in range(9):
        r = torch.tensor([1.0] * c + [0.0] * (8 - c), dtype=f64)
        with_b, without = maxrl_advantages(r, 8), maxrl_advantages(r, 8, baseline=False)
        if c == 0:
            assert torch.all(with_b == 0) and torch.all(without == 0)
            continue
        torch.testing.assert_close(with_b, (r - r.mean()) / r.mean())
        torch.testing.assert_close(without, r * 8 / c)
    r = torch.tensor([1.0, 0.0, 1.0], dtype=f64)
    torch.testing.assert_close(maxrl_advantages(r, 1, baseline=False), r)
    with pytest.raises(ValueError, match="n >= 2"):
        maxrl_advantages(r, 1)


# ---- best-sample (Tang et al. k = n; verl grpo_passk) -----------------------------------------------------

def test_best_sample_worked_examples():
    """verl's grpo_passk: only the best rollout gets r_max - r_2nd; a tie at the top gives no signal."""
    assert best_sample_advantages(torch.tensor([0.1, 0.7, 0.3], dtype=f64), 3).tolist() == pytest.approx([0, 0.4, 0])
    assert best_sample_advantages(torch.tensor([0.2, 0.9, 0.5, 0.9], dtype=f64), 4).tolist() == [0, 0, 0, 0]
    assert best_sample_advantages(torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=f64), 4).tolist() == [0, 1, 0, 0]
    assert best_sample_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=f64), 4).tolist() == [0, 0, 0, 0]
    g = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.5], dtype=f64)
    for n in (2, 3, 5):  # PKPO's s^(loo-1) x M/n
        torch.testing.assert_close(best_sample_advantages(g, n), pkpo_loo_minus_one(g, n) * 5 / n)
    with pytest.raises(ValueError, match="2 <= n"):
        best_sample_advantages(g, 1)


@pytest.mark.parametrize("m,n", [(4, 4), (4, 2), (5, 3)])
def test_best_sample_is_unbiased_up_to_one_over_n(m, n):
    """(n/M) E[sum_i A_i grad log pi] = grad max@n (pass@n for 0/1): the update is grad target / n."""
    for name, rewards, target in [("best_of_n", TIED, max_at(n, TIED)), ("pass_at_n", REWARDS, pass_at(n))]:
        strategy = build_strategy({"name": name, "n": n, "estimator": "best_sample"})
        torch.testing.assert_close(expected_update(via(strategy), m, rewards=rewards) * n, grad_of(target),
                                   rtol=1e-10, atol=1e-12)


# ---- Pass@k Training (Chen et al.) --------------------------------------------------------------------------

def test_passk_training_formula():
    """Hand values, the subset definition it is derived from, k = 1 = GRPO (population std), R in {0, 1} -> 0."""
    a = passk_training_advantages(torch.tensor([1.0, 0, 0, 0]), 2)  # R = 1/2, sigma = 1/2
    assert a.tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3], abs=1e-5)
    a = passk_training_advantages(torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0]), 4)  # R = 11/14, sigma = sqrt(33)/14
    assert a.tolist() == pytest.approx([3 / math.sqrt(33)] * 2 + [-1 / math.sqrt(33)] * 6, abs=1e-5)
    for n, k in [(5, 2), (6, 3), (4, 4)]:
        for c in range(n + 1):
            r = [1.0] * c + [0.0] * (n - c)
            subsets = list(itertools.combinations(range(n), k))
            reward = {sub: float(any(r[j] for j in sub)) for sub in subsets}
            mean = sum(reward.values()) / len(subsets)
            sigma = math.sqrt(sum((v - mean) ** 2 for v in reward.values()) / len(subsets))
            ref = [sum(reward[s] - mean for s in subsets if i in s) / sum(i in s for s in subsets) / (sigma + 1e-6)
                   for i in range(n)]
            assert passk_training_advantages(torch.tensor(r), k).tolist() == pytest.approx(ref, abs=1e-9)
    r = torch.tensor([1.0, 0, 0, 1, 0, 0], dtype=f64)
    grpo = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
    torch.testing.assert_close(passk_training_advantages(r, 1), grpo)
    for r in (torch.ones(4), torch.zeros(4), torch.tensor([1.0, 1, 1, 0])):
        assert torch.all(passk_training_advantages(r, 2) == 0)  # R = 1 (or 0): no signal


# ---- the registry ------------------------------------------------------------------------------------------

def test_registry_names_every_strategy_and_estimator_once():
    assert strategy_names() == ("standard", "pass_at_n", "majority", "best_of_n")
    assert estimator_names("pass_at_n") == ("surrogate", "best_sample", "maxrl", "maxrl_no_baseline",
                                            "passk_training", "pkpo")
    assert estimator_names("best_of_n") == ("surrogate", "best_sample", "pkpo")
    assert estimator_names("majority") == ("surrogate", "loo")
    assert estimator_names("standard") == ("surrogate",)


def test_strategies_declare_what_the_trainer_needs():
    assert Standard().is_identity and not Standard().replaces_advantages
    seq = PassAtN(4)
    assert seq.needs_sequence_log_probs and not seq.replaces_advantages and seq.target_metric == "pass@k"
    pk = PassAtN(4, estimator="pkpo")
    assert pk.replaces_advantages and not pk.needs_sequence_log_probs and not pk.is_identity
    with pytest.raises(ValueError, match="objective=rl"):
        pk.sft_loss(torch.tensor([-1.0], dtype=f64))
    bon = BestOfN(4, q_estimator="history")
    bon.rl_weights([Group(rewards=torch.tensor([1.0, 2.0]), correct=torch.zeros(2, dtype=torch.bool))])
    state = bon.state_dict()
    assert state["history"]["rewards"] == [1.0, 2.0] and bon.target_metric == "max@k"
    other = BestOfN(4, q_estimator="history")
    other.load_state_dict(state)
    assert len(other.history) == 2
    assert BestOfN(4, q_estimator="history", estimator="pkpo").state_dict() == {}  # no history kept
    assert PassAtN(4).state_dict() == {} and Standard().target_metric is None


@pytest.mark.parametrize("overrides,needles", [
    (["strategy=pass_at_n", "objective=rl", "strategy.estimator=pkp"],
     ["strategy.estimator='pkp'", "surrogate, best_sample, maxrl, maxrl_no_baseline, passk_training, pkpo"]),
    (["strategy=best_of_n", "objective=rl", "strategy.estimator=maxrl"], ["strategy.estimator='maxrl'", "pass_at_n"]),
    (["strategy=pass_at_n", "strategy.n=4", "strategy.estimator=pkpo"],  # objective=sft
     ["strategy.estimator='pkpo'", "objective=rl", "strategy.estimator=surrogate"]),
    (["strategy=pass_at_n", "objective=rl", "strategy.n=16", "strategy.estimator=pkpo"],
     ["objective.num_generations=8", "strategy.n = 16"]),
    (["strategy=pass_at_n", "objective=rl", "strategy.n=1", "strategy.estimator=maxrl"], ["strategy.n=1", "k >= 2"]),
    (["strategy=pass_at_n", "objective=rl", "strategy.n=4", "strategy.estimator=maxrl", "strategy.k_schedule=[4,2]"],
     ["strategy.k_schedule=[4, 2]", "pkpo"]),
    (["strategy=pass_at_n", "objective=rl", "strategy.n=4", "strategy.estimator=pkpo", "strategy.k_schedule=[16,1]"],
     ["objective.num_generations=8", "max(strategy.k_schedule) = 16"]),
    (["strategy=standard", "objective=rl", "strategy.estimator=pkpo"], ["strategy.estimator='pkpo'", "surrogate"]),
])
def test_config_validation_reads_the_registry(overrides, needles):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("strategy,estimator", [("pass_at_n", e) for e in estimator_names("pass_at_n")]
                         + [("best_of_n", e) for e in estimator_names("best_of_n")])
def test_every_estimator_composes_validates_and_builds(strategy, estimator):
    cfg = compose([f"strategy={strategy}", "objective=rl", "strategy.n=4", f"strategy.estimator={estimator}"])
    validate(cfg)
    s = build_strategy(cfg.strategy)
    assert s.estimator == estimator and s.replaces_advantages == (estimator != "surrogate")
    if s.replaces_advantages:
        g = Group(rewards=torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0, 1.0, 0.2, 0.1], dtype=f64),
                  correct=torch.tensor([True, False, False, True, False, False, False, False]))
        a = s.rl_advantages([g, g])
        assert a.shape == (16,) and torch.all(torch.isfinite(a)) and torch.equal(a[:8], a[8:])


def test_k_schedule_keys_only_when_set():
    """strategy.k_schedule (added after KEY_VERSION 2) stays out of the branch key while null."""
    from cat_experiments.cache import branch_fields, branch_key

    pk = compose(["strategy=pass_at_n", "objective=rl", "strategy.n=4", "strategy.estimator=pkpo"])
    assert "k_schedule" not in branch_fields(pk, pk.strategy)["strategy"]
    sched = compose(["strategy=pass_at_n", "objective=rl", "strategy.n=4", "strategy.estimator=pkpo",
                     "strategy.k_schedule=[8,1]"])
    validate(sched)
    assert branch_fields(sched, sched.strategy)["strategy"]["k_schedule"] == [8, 1]
    assert branch_key(sched, sched.strategy) != branch_key(pk, pk.strategy)
    surrogate = compose(["strategy=pass_at_n", "objective=rl", "strategy.n=4"])
    assert branch_key(pk, pk.strategy) != branch_key(surrogate, surrogate.strategy)


# ---- the MATH and protein presets: dry-run plans show the estimator ----------------------------------------

@pytest.mark.parametrize("preset,extra,needle", [
    ("math_passn_rl", ["strategy.n=4", f"dataset.path={MATH500}", f"dataset.test_path={MATH500}",
                       "warmup.num_examples=400", "objective.data_start=400", "objective.num_examples=100"],
     "branch cat: rl pass_at_n(N=4, estimator=pkpo)"),
    ("protein_unconditional_tiny", [], "branch cat: rl best_of_n(N=8, estimator=pkpo)"),
    ("protein_conditional_tiny", ["strategy.estimator=best_sample"], "branch cat: rl best_of_n(N=8, estimator=best_sample)"),
])
def test_presets_plan_with_an_estimator(preset, extra, needle, tmp_path, capsys, monkeypatch):
    import cat_experiments.models as models
    import cat_experiments.pipeline as pipeline
    from cat_experiments.main import run

    def no_model(*args, **kwargs):
        raise AssertionError("dry_run loaded a model")

    for module, name in [(models, "load_model"), (models, "load_model_and_tokenizer"),
                         (pipeline, "load_model_and_tokenizer")]:
        monkeypatch.setattr(module, name, no_model)
    cfg = compose([f"experiment={preset}", "strategy.estimator=pkpo", *extra, "dry_run=true",
                   f"cache_dir={tmp_path / 'cache'}"])
    validate(cfg)
    assert run(cfg) is None
    out = capsys.readouterr().out
    assert needle in out and "branch standard:" in out
    assert not (tmp_path / "cache").exists()


def test_math_passn_rl_with_pkpo_needs_as_many_rollouts_as_n():
    """The preset's own N = 16 with its M = 4 rollouts: PKPO cannot estimate pass@16 from 4 samples."""
    with pytest.raises(ConfigError, match="objective.num_generations=4"):
        validate(compose(["experiment=math_passn_rl", "strategy.estimator=pkpo"]))


# ---- a short GRPO run through the trainer ---------------------------------------------------------------------


def test_grpo_trains_on_the_pkpo_advantage_with_a_k_schedule(tmp_path, tmp_path_factory):
    from conftest import tiny_length_grpo

    from cat_experiments.training.rl import CatGRPOTrainer

    task, model, tok, ds, args = tiny_length_grpo(tmp_path, tmp_path_factory)
    strategy = PassAtN(2, estimator="pkpo", k_schedule=[4, 2])
    trainer = CatGRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, task=task,
                             strategy=strategy)
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([dict(ds[i]) for i in range(2) for _ in range(4)])
    scores = trainer.task_reward.last_scores
    expected = torch.cat([pkpo_advantages(torch.tensor([s.correct for s in scores[4 * g:4 * g + 4]], dtype=f64), 4)
                          for g in range(2)])  # step 0 of an unknown plan: k = k_start = 4
    assert torch.allclose(out["advantages"], expected.to(out["advantages"].dtype), atol=1e-6)

    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss"]) for h in logs)
    assert all("pkpo_adv/nonzero_frac" in h and "pkpo_adv/abs_mean" in h for h in logs)
    assert [h["estimator_k"] for h in logs] == [4.0, 3.0, 2.0]  # annealed over the 3 steps
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_trainer_restores_the_strategy_state_it_declares(tmp_path):
    """load_strategy_state reads cat_strategy_state.json (the format written before the registry) into whatever
    state the strategy declares; a strategy with none ignores it."""
    import json

    from cat_experiments.training.rl import STRATEGY_STATE, CatGRPOTrainer

    (tmp_path / STRATEGY_STATE).write_text(json.dumps({"history": {"capacity": 5, "rewards": [1.0, 2.0, 3.0]}}))
    trainer = object.__new__(CatGRPOTrainer)
    trainer.strategy = BestOfN(4, q_estimator="history", history_size=5)
    trainer.load_strategy_state(str(tmp_path))
    assert len(trainer.strategy.history) == 3 and trainer.strategy.state_dict()["history"]["rewards"] == [1.0, 2.0, 3.0]
    trainer.strategy = PassAtN(4, estimator="pkpo")
    trainer.load_strategy_state(str(tmp_path))  # no state: nothing to restore, no error


def test_passk_training_with_k_equal_to_the_rollouts_is_rejected():
    """k = M makes every k-subset the whole group: R is 0 or 1, sigma 0, every advantage 0 (no training)."""
    from cat_experiments.strategies.passk_training import passk_training_advantages

    assert torch.all(passk_training_advantages(torch.tensor([True, False, False, True]), 4) == 0)
    with pytest.raises(ConfigError, match="strategy.n"):
        validate(compose(["strategy=pass_at_n", "strategy.n=8", "strategy.estimator=passk_training", "objective=rl",
                          "objective.num_generations=8"]))
    validate(compose(["strategy=pass_at_n", "strategy.n=4", "strategy.estimator=passk_training", "objective=rl",
                      "objective.num_generations=8"]))
