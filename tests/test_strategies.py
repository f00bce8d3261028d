"""The CAT objective library against method.md: exact references, limits, numerics, gradients."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cat_experiments.strategies import (
    BestOfN,
    Group,
    Majority,
    PassAtN,
    RewardHistory,
    Standard,
    best_of_n_rl_weight,
    build_strategy,
    laplace_success_rate,
    majority_rl_weight,
    majority_sft_loss,
    majority_sft_weight,
    majority_threshold,
    max_wrong_count,
    normalize_weights,
    pass_at_n_rl_weight,
    pass_at_n_sft_loss,
    pass_at_n_sft_weight,
    pass_at_n_unbiased_weight,
    rank_quantiles,
)

LOG_PS = [0.0, -1e-12, -1.0, -50.0, -1e3, -1e4]
NS = [1, 2, 4, 16, 64, 1024]
f64 = torch.float64


def lp_tensor(values=LOG_PS, grad=False):
    return torch.tensor(values, dtype=f64, requires_grad=grad)


# ---- exact references (rational arithmetic) ----------------------------------------------------

def binom_tail(p: Fraction, n: int, k: int) -> Fraction:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def ref_pass_weight(p: Fraction, n: int) -> float:
    return float(n * p * (1 - p) ** (n - 1) / (1 - (1 - p) ** n))


def ref_majority_weight(p: Fraction, n: int, k: int) -> float:
    return float(k * math.comb(n, k) * p**k * (1 - p) ** (n - k) / binom_tail(p, n, k))


RATIONAL_PS = [Fraction(1, 1000), Fraction(1, 10), Fraction(1, 3), Fraction(1, 2), Fraction(9, 10), Fraction(99, 100)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 16])
def test_pass_at_n_matches_exact_rational_reference(n):
    log_p = lp_tensor([math.log(p) for p in RATIONAL_PS])
    loss = pass_at_n_sft_loss(log_p, n)
    w = pass_at_n_sft_weight(log_p, n)
    for i, p in enumerate(RATIONAL_PS):
        s = 1 - (1 - p) ** n
        assert loss[i].item() == pytest.approx(-math.log(float(s)), rel=1e-12, abs=1e-14)
        assert w[i].item() == pytest.approx(ref_pass_weight(p, n), rel=1e-10)
        raw = pass_at_n_rl_weight(torch.tensor(float(p), dtype=f64), n, "raw").item()
        assert raw == pytest.approx(float(n * (1 - p) ** (n - 1)), rel=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
def test_majority_matches_exact_rational_reference(n):
    log_p = lp_tensor([math.log(p) for p in RATIONAL_PS])
    for k in range(1, n + 1):
        loss = majority_sft_loss(log_p, n, k)
        w = majority_sft_weight(log_p, n, k)
        for i, p in enumerate(RATIONAL_PS):
            b = binom_tail(p, n, k)
            assert loss[i].item() == pytest.approx(-math.log(float(b)), rel=1e-10, abs=1e-13)
            assert w[i].item() == pytest.approx(ref_majority_weight(p, n, k), rel=1e-9)
            raw = majority_rl_weight(torch.tensor(float(p), dtype=f64), n, k, "raw").item()
            ref_raw = n * math.comb(n - 1, k - 1) * p ** (k - 1) * (1 - p) ** (n - k)
            assert raw == pytest.approx(float(ref_raw), rel=1e-9)


def test_majority_with_k1_is_pass_at_n():
    log_p = lp_tensor([-0.01, -0.5, -3.0, -40.0])
    for n in [2, 5, 16]:
        assert torch.allclose(majority_sft_loss(log_p, n, 1), pass_at_n_sft_loss(log_p, n), rtol=1e-10)
        assert torch.allclose(majority_sft_weight(log_p, n, 1), pass_at_n_sft_weight(log_p, n), rtol=1e-10)


# ---- numerics -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", NS)
def test_pass_at_n_finite_on_extreme_log_p(n):
    log_p = lp_tensor(grad=True)
    loss = pass_at_n_sft_loss(log_p, n)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(log_p.grad).all()
    assert torch.isfinite(pass_at_n_sft_weight(log_p, n)).all()
    for form in ("raw", "log"):
        w = pass_at_n_rl_weight(torch.exp(log_p.detach()), n, form)
        assert torch.isfinite(w).all()


@pytest.mark.parametrize("n", NS)
def test_majority_finite_on_extreme_log_p_every_k(n):
    log_p = lp_tensor()
    p = torch.exp(log_p)
    for k in range(1, n + 1):
        lp = log_p.clone().requires_grad_(True)
        loss = majority_sft_loss(lp, n, k)
        loss.sum().backward()
        w = majority_sft_weight(log_p, n, k)
        assert torch.isfinite(loss).all() and torch.isfinite(lp.grad).all(), (n, k)
        assert torch.isfinite(w).all() and (w >= 0).all(), (n, k)
        for form in ("raw", "log"):
            assert torch.isfinite(majority_rl_weight(p, n, k, form)).all(), (n, k, form)


def test_long_sequences_keep_a_useful_loss():
    # At log p = -1e4 there is no probability floor: loss ~ -log N - log p and gradient ~ CE's.
    log_p = lp_tensor([-1e4], grad=True)
    loss = pass_at_n_sft_loss(log_p, 16)
    loss.backward()
    assert loss.item() == pytest.approx(1e4 - math.log(16), rel=1e-12)
    assert log_p.grad.item() == pytest.approx(-1.0, rel=1e-12)
    assert majority_sft_weight(log_p.detach(), 64, 26).item() == pytest.approx(26.0, rel=1e-9)


def fd_check(loss_fn, points, h=1e-6):
    for x0 in points:
        x = torch.tensor([x0], dtype=f64, requires_grad=True)
        loss_fn(x).sum().backward()
        step = h * max(1.0, abs(x0))
        fd = (loss_fn(torch.tensor([x0 + step], dtype=f64)) - loss_fn(torch.tensor([x0 - step], dtype=f64))) / (2 * step)
        assert x.grad.item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-12), (x0, x.grad.item(), fd.item())


FD_POINTS = [-1e-3, -0.05, -0.3, -1.0, -2.5, -7.0, -30.0, -1e3, -1e4]


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64, 1024])
def test_pass_at_n_gradient_matches_finite_difference(n):
    fd_check(lambda x: pass_at_n_sft_loss(x, n), FD_POINTS)


@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (2, 2), (4, 3), (8, 3), (16, 4), (64, 26), (64, 64), (1024, 513)])
def test_majority_gradient_matches_finite_difference(n, k):
    fd_check(lambda x: majority_sft_loss(x, n, k), FD_POINTS)


def test_best_of_n_sft_gradient_matches_finite_difference():
    s = BestOfN(n=8)
    fd_check(s.sft_loss, FD_POINTS)


# ---- limits and the identity strategy ------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 4, 16, 64, 1024])
def test_pass_at_n_weight_limits(n):
    assert pass_at_n_sft_weight(lp_tensor([-60.0]), n).item() == pytest.approx(1.0, abs=1e-12)  # p -> 0
    assert pass_at_n_sft_weight(lp_tensor([-1e-9]), n).item() < 1e-6  # p -> 1
    assert pass_at_n_sft_weight(lp_tensor([0.0]), n).item() == 0.0


@pytest.mark.parametrize("n,k", [(8, 3), (16, 4), (64, 26), (5, 5), (1024, 100)])
def test_majority_weight_tends_to_k(n, k):
    assert majority_sft_weight(lp_tensor([-80.0]), n, k).item() == pytest.approx(k, rel=1e-9)


def test_n_equal_1_is_exactly_standard_training():
    log_p = lp_tensor(grad=False)
    expected = -log_p
    p = torch.exp(log_p)
    strategies = [Standard(), PassAtN(1), Majority(1, 1), BestOfN(1)]
    for s in strategies:
        assert torch.equal(s.sft_loss(log_p), expected), s.describe()
        assert torch.equal(s.sft_weight(log_p), torch.ones_like(log_p)), s.describe()
    assert torch.equal(pass_at_n_sft_loss(log_p, 1), expected)
    assert torch.equal(majority_sft_loss(log_p, 1, 1), expected)
    for form in ("raw", "log"):
        assert torch.equal(pass_at_n_rl_weight(p, 1, form), torch.ones_like(p))
        assert torch.equal(majority_rl_weight(p, 1, 1, form), torch.ones_like(p))
    assert torch.equal(best_of_n_rl_weight(torch.linspace(0, 1, 7, dtype=f64), 1), torch.ones(7, dtype=f64))
    # and the gradient of the loss is the CE gradient
    x = lp_tensor([-0.7, -3.0], grad=True)
    PassAtN(1).sft_loss(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(2, dtype=f64))


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-200.0, max_value=-1e-9), st.integers(min_value=2, max_value=256))
def test_property_pass_weight_in_unit_interval_and_decreasing(log_p, n):
    w = pass_at_n_sft_weight(lp_tensor([log_p, log_p - 0.5]), n)
    assert 0.0 <= w[0].item() <= 1.0 + 1e-12
    assert w[1].item() >= w[0].item() - 1e-12  # lower p, larger weight


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-200.0, max_value=-1e-9), st.integers(min_value=1, max_value=64), st.data())
def test_property_majority_weight_bounded_by_k(log_p, n, data):
    k = data.draw(st.integers(min_value=1, max_value=n))
    w = majority_sft_weight(lp_tensor([log_p]), n, k).item()
    assert 0.0 <= w <= k * (1 + 1e-9)


def test_weights_are_detached():
    x = lp_tensor([-1.0, -2.0], grad=True)
    assert not pass_at_n_sft_weight(x, 4).requires_grad
    assert not majority_sft_weight(x, 8, 3).requires_grad


def test_float32_inputs_keep_dtype_and_flush_denormal_weights():
    x = torch.tensor([-1e-30, -2.0, -400.0], dtype=torch.float32, requires_grad=True)
    loss = pass_at_n_sft_loss(x, 1024)
    assert loss.dtype == torch.float32
    loss.sum().backward()
    g = x.grad.abs()
    assert g[0].item() == 0.0  # p ~ 1: weight ~ 1e-... flushed to an exact zero, not a denormal
    assert g[2].item() == pytest.approx(1.0)


# ---- RL estimators ---------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n", [(4, 1), (4, 4), (8, 4), (16, 16), (32, 16), (12, 5)])
def test_unbiased_pass_weight_exact_expectation(m, n):
    # E_{c ~ Binomial(m, p)} [N C(m-c, N-1) / C(m, N-1)] = N (1 - p)^(N-1), exactly.
    cs = torch.arange(m + 1)
    w = pass_at_n_unbiased_weight(cs, m, n)
    for p in [Fraction(0), Fraction(1, 7), Fraction(1, 2), Fraction(5, 6), Fraction(1)]:
        pmf = [float(math.comb(m, c) * p**c * (1 - p) ** (m - c)) for c in range(m + 1)]
        expectation = sum(pi * wi for pi, wi in zip(pmf, w.tolist(), strict=True))
        assert expectation == pytest.approx(float(n * (1 - p) ** (n - 1)), rel=1e-10, abs=1e-12)


def test_unbiased_estimator_needs_enough_rollouts():
    with pytest.raises(ValueError, match="N - 1"):
        pass_at_n_unbiased_weight(0, 2, 8)
    s = PassAtN(8, weight_form="raw", p_estimator="unbiased")
    with pytest.raises(ValueError, match="num_generations"):
        s.group_weights(Group(rewards=torch.zeros(4), correct=torch.zeros(4, dtype=torch.bool)))


def test_unbiased_group_weights_are_leave_one_out():
    m, n = 8, 4
    correct = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    s = PassAtN(n, weight_form="raw", p_estimator="unbiased")
    w = s.group_weights(Group(rewards=correct.double(), correct=correct))
    # successful rollout: the other 7 hold 1 success -> 6 fails; failed rollout: 2 successes -> 5 fails
    assert w[0].item() == pytest.approx(n * math.comb(6, 3) / math.comb(7, 3))
    assert w[2].item() == pytest.approx(n * math.comb(5, 3) / math.comb(7, 3))
    # method.md's form for a failed rollout: C(M-c-1, N-1)/C(M-1, N-1), c = 2
    assert w[2].item() == pytest.approx(n * math.comb(m - 2 - 1, n - 1) / math.comb(m - 1, n - 1))


def test_sequence_estimator_clamps_p():
    s = PassAtN(4, weight_form="raw", p_estimator="sequence")
    g = Group(rewards=torch.ones(3), correct=torch.ones(3, dtype=torch.bool),
              seq_log_probs=torch.tensor([0.0, -1e4, math.log(0.5)]))
    w = s.group_weights(g)
    assert w[0].item() == pytest.approx(4 * (1e-10) ** 3, rel=1e-6)  # p clamped to 1 - 1e-10
    assert w[1].item() == pytest.approx(4.0, rel=1e-9)  # p clamped to 1e-10
    assert w[2].item() == pytest.approx(4 * 0.5**3)


def test_laplace():
    assert laplace_success_rate(0, 8).item() == pytest.approx(0.1)
    assert laplace_success_rate(8, 8).item() == pytest.approx(0.9)


@pytest.mark.parametrize("n,m,c_max,k", [(8, 8, 0, 2), (8, 8, 1, 2), (8, 8, 3, 4), (8, 8, 8, 5), (4, 8, 8, 3), (1, 8, 8, 1)])
def test_dynamic_threshold_examples(n, m, c_max, k):
    assert majority_threshold(n, m, c_max) == k


def test_majority_group_weight_uses_dynamic_threshold_and_laplace():
    # 8 rollouts: 2 correct ("7"), 3 say "5", 2 say "6", 1 unparseable. c_max = 3 -> k = 4 for N = 8.
    keys = ["7", "7", "5", "5", "5", "6", "6", None]
    correct = torch.tensor([k == "7" for k in keys])
    s = Majority(8, k=None, weight_form="raw")
    g = Group(rewards=correct.double(), correct=correct, vote_keys=keys)
    assert s.threshold_for(g) == 4
    w = s.group_weights(g)
    expected = majority_rl_weight(torch.tensor(3 / 10, dtype=f64), 8, 4, "raw").item()
    assert torch.allclose(w, torch.full((8,), expected, dtype=f64))
    # all unparseable answers form ONE wrong category (the authors' convention): c_max = 6 -> k = 5
    keys2 = [None] * 6 + ["7", "7"]
    g2 = Group(rewards=torch.zeros(8), correct=torch.tensor([False] * 6 + [True] * 2), vote_keys=keys2)
    assert s.threshold_for(g2) == 5


def test_dynamic_threshold_counts_invalid_answers_as_one_wrong_answer():
    # issue 8's example: [None x5, "7", "12", "12"], "12" correct, N = M = 8 -> c_max = 5 -> k = 5
    keys = [None] * 5 + ["7", "12", "12"]
    correct = [k == "12" for k in keys]
    assert max_wrong_count(keys, correct) == 5  # before: 1 (None dropped)
    s = Majority(8, k=None, weight_form="raw")
    g = Group(rewards=torch.tensor(correct, dtype=f64), correct=torch.tensor(correct), vote_keys=keys)
    assert s.threshold_for(g) == 5  # before: 2
    # raw weight at p_hat = 3/10: N C(7,4) p^4 (1-p)^3 = 0.778 (k = 5); k = 2 would give 1.976
    w = s.group_weights(g)
    assert w[0].item() == pytest.approx(8 * 35 * 0.3**4 * 0.7**3, rel=1e-12)
    assert w[0].item() == pytest.approx(0.7779, abs=1e-4)
    assert majority_rl_weight(torch.tensor(0.3, dtype=f64), 8, 2, "raw").item() == pytest.approx(1.9765, abs=1e-4)
    # invalid answers that are not the most frequent wrong category do not raise c_max beyond it
    assert max_wrong_count(["a", "a", "a", None, "b"], [False, False, False, False, True]) == 3
    assert max_wrong_count([None, None], [False, False]) == 2
    assert max_wrong_count(["b", None], [True, True]) == 0  # correct answers never count


def test_rank_quantiles_ties_share_q():
    q = rank_quantiles(torch.tensor([1.0, 3.0, 3.0, 0.5]))
    assert q.tolist() == pytest.approx([2 / 5, 3 / 5, 3 / 5, 1 / 5])
    assert rank_quantiles(torch.ones(4)).tolist() == pytest.approx([1 / 5] * 4)


def test_reward_history_quantiles_fifo_and_clamp():
    h = RewardHistory(capacity=3)
    q = h.quantiles(torch.tensor([1.0, 2.0]))
    assert q.tolist() == pytest.approx([0.5, 0.5])  # empty history: (0 + 1) / (0 + 2)
    h.extend(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # capacity 3 keeps 2, 3, 4
    assert len(h) == 3
    assert h.quantiles(torch.tensor([3.5])).item() == pytest.approx((2 + 1) / (3 + 2))
    big = RewardHistory(capacity=4000)
    big.extend(torch.zeros(4000))
    assert big.quantiles(torch.tensor([1.0])).item() == pytest.approx(0.999)  # clamped
    assert big.quantiles(torch.tensor([-1.0])).item() == pytest.approx(0.001)


def test_best_of_n_history_is_queried_before_the_batch_is_appended():
    s = BestOfN(4, q_estimator="history")
    groups = [Group(rewards=torch.tensor([1.0, 2.0]), correct=torch.zeros(2, dtype=torch.bool)),
              Group(rewards=torch.tensor([3.0]), correct=torch.zeros(1, dtype=torch.bool))]
    w = s.rl_weights(groups)
    assert torch.allclose(w, torch.full((3,), 4 * 0.5**3, dtype=f64))  # empty history for all three
    assert len(s.history) == 3


def test_best_of_n_weight():
    assert best_of_n_rl_weight(torch.tensor([0.5, 1.0, 0.0]), 8).tolist() == pytest.approx([8 * 0.5**7, 8.0, 0.0])


# ---- normalisation ---------------------------------------------------------------------------------

def test_normalize_weights_clip_then_mean():
    w = torch.tensor([1.0, 3.0, 100.0, 0.0], dtype=f64)
    out = normalize_weights(w, clip=10.0, mean_normalize=True, num_groups=4)
    assert out.tolist() == pytest.approx([1 / 3.5, 3 / 3.5, 10 / 3.5, 0.0])
    assert out.mean().item() == pytest.approx(1.0)
    assert normalize_weights(w, clip=10.0).tolist() == [1.0, 3.0, 10.0, 0.0]


def test_normalize_weights_single_group_and_all_zero():
    w = torch.tensor([2.5, 2.5], dtype=f64)
    assert normalize_weights(w, mean_normalize=True, num_groups=1).tolist() == [2.5, 2.5]
    # per-sample weights (best-of-N, sequence-p Pass@N) are normalised even in a one-prompt batch
    v = torch.tensor([1.0, 3.0], dtype=f64)
    assert normalize_weights(v, mean_normalize=True, num_groups=1, per_sample=True).tolist() == [0.5, 1.5]
    assert normalize_weights(v, mean_normalize=True, num_groups=1).tolist() == [1.0, 3.0]
    z = torch.zeros(6, dtype=f64)
    assert normalize_weights(z, clip=1.0, mean_normalize=True, num_groups=3).tolist() == [0.0] * 6
    with pytest.raises(ValueError, match="clip"):
        normalize_weights(w, clip=0.0)


def test_strategy_rl_weights_normalise_over_the_batch():
    s = Majority(4, k=2, clip=10.0, mean_normalize=True)
    groups = [Group(rewards=torch.tensor([1.0, 0, 0, 0]), correct=torch.tensor([True, False, False, False])),
              Group(rewards=torch.tensor([1.0, 1, 1, 1]), correct=torch.ones(4, dtype=torch.bool))]
    w = s.rl_weights(groups)
    assert w.shape == (8,)
    assert w.mean().item() == pytest.approx(1.0)
    assert w[0].item() > w[4].item()  # the uncertain prompt outweighs the solved one


# ---- construction and test-time aggregation ---------------------------------------------------------

def test_build_strategy_and_errors():
    assert isinstance(build_strategy({"name": "standard"}), Standard)
    s = build_strategy({"name": "majority", "n": 16, "k": 4, "clip": 10.0, "mean_normalize": True})
    assert (s.n, s.k, s.clip, s.mean_normalize) == (16, 4, 10.0, True)
    with pytest.raises(ValueError, match="unknown strategy.name='pass_at'"):
        build_strategy({"name": "pass_at", "n": 4})
    with pytest.raises(ValueError, match="n=0"):
        build_strategy({"name": "pass_at_n", "n": 0})
    with pytest.raises(ValueError, match="k=9, n=8"):
        build_strategy({"name": "majority", "n": 8, "k": 9})
    with pytest.raises(ValueError, match="weight_form"):
        build_strategy({"name": "pass_at_n", "n": 4, "weight_form": "sqrt"})
    with pytest.raises(ValueError, match="dynamic"):
        Majority(8, k=None).sft_loss(lp_tensor([-1.0]))


def test_aggregate():
    assert PassAtN(4).aggregate([False, True, False]) == 1.0
    assert PassAtN(4).aggregate([False, False]) == 0.0
    m = Majority(3, 2)
    assert m.aggregate([True, True, False], ["a", "a", "b"]) == 1.0
    assert m.aggregate([True, False, False], ["a", "b", None]) == 0.5  # tie split
    assert m.aggregate([False, False, False], [None, None, None]) == 0.0
    assert m.aggregate([True, False, False], ["a", "b", "b"]) == 0.0
    assert BestOfN(3).aggregate([False] * 3, rewards=[1.0, 4.0, 2.0]) == 4.0
    assert Standard().aggregate([True, False]) == 1.0


def test_losses_and_weights_stay_on_the_input_device():
    # The "meta" device stands in for CUDA on a CPU-only machine: any tensor the formulas create on
    # the CPU and mix with the input fails here exactly as it would on a GPU (seen on an H200).
    x = torch.zeros(3, device="meta", requires_grad=True)
    for fn in (lambda v: pass_at_n_sft_loss(v, 16), lambda v: pass_at_n_sft_weight(v, 4),
               lambda v: majority_sft_loss(v, 8, 3), lambda v: majority_sft_weight(v, 16, 4),
               lambda v: BestOfN(8).sft_loss(v)):
        out = fn(x)
        assert out.device.type == "meta" and out.shape == (3,)


def test_one_prompt_batch_normalises_per_sample_weights_only():
    """Mean-normalisation with a single prompt in the batch: per-sample weights (best-of-N, Pass@N with
    sequence p) are divided by their mean; a per-prompt weight (majority, Laplace Pass@N) keeps its value."""
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=f64)
    bon = BestOfN(4, q_estimator="group", mean_normalize=True)
    w = bon.rl_weights([Group(rewards=rewards, correct=rewards > 1)])
    raw = best_of_n_rl_weight(rank_quantiles(rewards), 4)
    assert torch.allclose(w, raw / raw.mean())  # before: the raw weights
    assert w.mean().item() == pytest.approx(1.0)
    seq = PassAtN(4, weight_form="raw", p_estimator="sequence", mean_normalize=True)
    lp = torch.log(torch.tensor([0.1, 0.5, 0.9, 0.2], dtype=f64))
    ws = seq.rl_weights([Group(rewards=rewards, correct=rewards > 1, seq_log_probs=lp)])
    assert ws.mean().item() == pytest.approx(1.0)
    maj = Majority(4, k=2, mean_normalize=True)
    wm = maj.rl_weights([Group(rewards=rewards, correct=rewards > 1, vote_keys=["a", "b", "c", "c"])])
    assert torch.allclose(wm, torch.full((4,), majority_rl_weight(torch.tensor(3 / 6, dtype=f64), 4, 2).item(), dtype=f64))
    lap = PassAtN(4, weight_form="raw", p_estimator="laplace", mean_normalize=True)
    wl = lap.rl_weights([Group(rewards=rewards, correct=rewards > 1)])
    assert wl[0].item() == pytest.approx(pass_at_n_rl_weight(torch.tensor(3 / 6, dtype=f64), 4).item())
