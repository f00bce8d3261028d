"""Behaviour tests for the test-time scaling-curve estimators (method.md section 3)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from cat_experiments.evaluation.estimators import (
    expected_max_at_k,
    expected_max_at_k_curves,
    majority_at_k,
    majority_at_k_curves,
    majority_at_k_monte_carlo,
    majority_at_k_monte_carlo_curves,
    pass_at_k,
    pass_at_k_curves,
    plurality_vote,
)

# ----------------------------------------------------------------------------- references


def brute_majority(votes, correct, k) -> Fraction:
    """Average over every k-subset (by position) of the exact tie-broken plurality outcome."""
    total = Fraction(0)
    subsets = 0
    for subset in itertools.combinations(range(len(votes)), k):
        subsets += 1
        counts = Counter(votes[i] for i in subset if votes[i] is not None)
        if correct is None or correct not in counts:
            continue
        top = max(counts.values())
        if counts[correct] == top:
            total += Fraction(1, sum(1 for n in counts.values() if n == top))
    return total / subsets


def plurality_outcome(votes, correct) -> float:
    """Expected score of one tie-broken plurality vote over the whole pool."""
    counts = Counter(v for v in votes if v is not None)
    if correct is None or correct not in counts:
        return 0.0
    top = max(counts.values())
    return 1.0 / sum(1 for n in counts.values() if n == top) if counts[correct] == top else 0.0


def random_pools(seed: int, count: int, max_m: int = 10):
    """Seeded pools with few keys (so ties are common) and invalid answers; correct may be absent."""
    rng = np.random.default_rng(seed)
    pools = []
    for _ in range(count):
        m = int(rng.integers(1, max_m + 1))
        n_keys = int(rng.integers(1, 5))
        p_invalid = float(rng.choice([0.0, 0.2, 0.5]))
        votes = [None if rng.random() < p_invalid else f"k{int(rng.integers(n_keys))}" for _ in range(m)]
        correct = f"k{int(rng.integers(n_keys + 1))}"  # k{n_keys} is never in the pool
        pools.append((votes, correct))
    return pools


SPECIAL_POOLS = [
    ([None] * 6, "a"),  # all invalid
    (["a"] * 7, "a"),  # all identical, correct
    (["b"] * 7, "a"),  # all identical, correct absent
    (["a", "a", "b", "b", "c", "c", None], "a"),  # three-way tie at the top
    (["a", "b", None, None, None], "b"),
    (["a", "b", "c", "d", "e"], "c"),  # all distinct: every draw is a tie
    (["x", "x", "y", None, "x", "y", "y", "z"], "z"),
    (["a", "b", "a"], None),  # the correct answer is the invalid key: never wins
    ([1, 1, 2, 2, 2, None, 3, 1, 3, 3], 3),  # non-string keys
]


# ----------------------------------------------------------------------------- majority vote


def test_majority_matches_bruteforce_on_random_and_special_pools():
    pools = random_pools(seed=1234, count=150) + SPECIAL_POOLS
    covered = Counter()
    for votes, correct in pools:
        m = len(votes)
        valid = [v for v in votes if v is not None]
        covered["absent"] += correct not in valid
        covered["invalid"] += len(valid) < m
        covered["all_invalid"] += not valid
        for k in range(1, m + 1):
            expected = float(brute_majority(votes, correct, k))
            got = majority_at_k(votes, correct, k)
            assert got == pytest.approx(expected, abs=1e-12, rel=0), (votes, correct, k)
        curve = majority_at_k_curves([votes], [correct])  # ks=None: every budget at once
        brute_curve = [float(brute_majority(votes, correct, k)) for k in range(1, m + 1)]
        np.testing.assert_allclose(curve[0], brute_curve, rtol=0, atol=1e-12)
    assert covered["absent"] >= 10 and covered["invalid"] >= 30 and covered["all_invalid"] >= 1


def test_majority_known_values_with_ties():
    # pool a a b b: k=2 -> {aa}: 1, {bb}: 0, four {ab}: 1/2 each -> (1 + 2) / 6 = 1/2
    assert majority_at_k(["a", "a", "b", "b"], "a", 2) == pytest.approx(0.5, abs=1e-15)
    # pool a b None: k=2 -> {a,b}: 1/2, {a,None}: 1, {b,None}: 0 -> 1/2
    assert majority_at_k(["a", "b", None], "a", 2) == pytest.approx(0.5, abs=1e-15)
    # invalid answers take slots: a None None, k=1 -> 1/3
    assert majority_at_k(["a", None, None], "a", 1) == pytest.approx(1 / 3, abs=1e-15)
    assert majority_at_k([None, None], "a", 2) == 0.0
    assert majority_at_k(["b", "b"], "a", 1) == 0.0


def test_majority_curve_endpoints():
    rng = np.random.default_rng(7)
    pools = random_pools(seed=99, count=60, max_m=12)
    for votes, correct in pools:
        m = len(votes)
        curve = majority_at_k_curves([votes], [correct])[0]
        assert curve.shape == (m,)
        # maj@1 is the fraction of the pool equal to the correct key
        assert curve[0] == pytest.approx(sum(v == correct for v in votes) / m, abs=1e-14)
        # maj@m is the deterministic plurality outcome of the whole pool (1, 0 or 1/(t+1))
        assert curve[-1] == pytest.approx(plurality_outcome(votes, correct), abs=1e-14)
    # a whole-pool tie of the correct key with two others gives 1/3 at k = m
    votes = list(rng.permutation(["a"] * 3 + ["b"] * 3 + ["c"] * 3 + [None] * 2))
    assert majority_at_k_curves([votes], ["a"])[0, -1] == pytest.approx(1 / 3, abs=1e-14)


def test_majority_curves_match_scalar_on_many_problems():
    pools = random_pools(seed=5, count=40, max_m=9)
    size_groups: dict[int, list] = {}
    for votes, correct in pools:
        size_groups.setdefault(len(votes), []).append((votes, correct))
    for m, group in size_groups.items():
        votes_pp = [v for v, _ in group]
        correct_pp = [c for _, c in group]
        ks = [k for k in (1, 2, m // 2 + 1, m) if k <= m]
        curves = majority_at_k_curves(votes_pp, correct_pp, ks)
        assert curves.shape == (len(group), len(ks))
        for row, (votes, correct) in zip(curves, group, strict=True):
            np.testing.assert_allclose(
                row, [majority_at_k(votes, correct, k) for k in ks], rtol=0, atol=1e-14
            )
    # pools of different sizes work with explicit budgets
    mixed = majority_at_k_curves([["a", "b", "a"], ["a", None, "b", "b", "a"]], ["a", "b"], [1, 3])
    expected = [
        [majority_at_k(["a", "b", "a"], "a", k) for k in (1, 3)],
        [majority_at_k(["a", None, "b", "b", "a"], "b", k) for k in (1, 3)],
    ]
    np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-14)


def _hypergeometric_two_keys(a: int, b: int, u: int, k: int) -> float:
    """Exact maj@k for a pool of a correct, b of one wrong key and u invalid (big-integer sums)."""
    twice = 0  # ties count half: accumulate 2 * (wins) + ties
    for xc in range(1, min(a, k) + 1):
        lo = max(0, k - xc - u)
        for xo in range(lo, min(b, k - xc, xc) + 1):
            ways = math.comb(a, xc) * math.comb(b, xo) * math.comb(u, k - xc - xo)
            twice += ways * (1 if xo == xc else 2)
    return float(Fraction(twice, 2 * math.comb(a + b + u, k)))


def test_majority_large_pool_m1024_is_exact_and_finite():
    a, b, u = 430, 420, 174  # m = 1024: C(1024, 512) ~ 4.5e306, products of binomials overflow float64
    votes = ["right"] * a + ["wrong"] * b + [None] * u
    ks = [1, 2, 3, 7, 100, 511, 512, 900, 1019, 1023, 1024]
    curve = majority_at_k_curves([votes], ["right"], ks)[0]
    assert np.all(np.isfinite(curve)) and np.all((curve >= 0) & (curve <= 1))
    for k, got in zip(ks, curve, strict=True):
        if k != 511:  # (skip one of the two slowest big-integer references)
            assert got == pytest.approx(_hypergeometric_two_keys(a, b, u, k), abs=1e-12), k
    assert curve[-1] == 1.0  # whole pool: right (430) beats wrong (420)
    assert curve[0] == pytest.approx(a / 1024, abs=1e-15)


def test_majority_large_pool_many_keys_all_budgets():
    rng = np.random.default_rng(3)
    keys = rng.choice(6, size=1024, p=[0.3, 0.25, 0.2, 0.1, 0.05, 0.1])
    votes = [None if x == 5 else int(x) for x in keys]
    curves = majority_at_k_curves([votes, votes, votes], [0, 1, 4])
    assert curves.shape == (3, 1024)
    assert np.all(np.isfinite(curves)) and np.all((curves >= 0) & (curves <= 1))
    counts = Counter(votes)
    for row, key in zip(curves, [0, 1, 4], strict=True):
        assert row[0] == pytest.approx(counts[key] / 1024, abs=1e-13)
        assert row[-1] == pytest.approx(plurality_outcome(votes, key), abs=1e-13)
    # the most frequent key's accuracy rises towards 1 with the budget, the others' fall to 0
    assert curves[0, 600] > curves[0, 10] > curves[0, 0]
    assert curves[1, -1] == 0.0 and curves[2, -1] == 0.0
    # an independent estimate agrees within 5 standard errors at a few budgets
    ks = np.array([2, 9, 64, 300])
    mc, se = majority_at_k_monte_carlo_curves([votes], [0], ks, draws=3000, rng=11, return_se=True)
    assert np.all(np.abs(mc[0] - curves[0, ks - 1]) <= 5 * se[0] + 1e-12)


# ----------------------------------------------------------------------------- Monte Carlo


def test_monte_carlo_agrees_with_exact_within_five_standard_errors():
    draws = 4000
    rng = np.random.default_rng(2024)
    for votes, correct in random_pools(seed=8, count=12, max_m=10) + SPECIAL_POOLS[:6]:
        for k in sorted({1, (len(votes) + 1) // 2, len(votes)}):
            exact = majority_at_k(votes, correct, k)
            estimate = majority_at_k_monte_carlo(votes, correct, k, draws=draws, rng=rng)
            se = math.sqrt(exact * (1 - exact) / draws)  # bound on the SE of a [0, 1] score with this mean
            assert abs(estimate - exact) <= 5 * se + 1e-12, (votes, correct, k, estimate, exact)


def test_monte_carlo_curves_agree_with_exact_curves():
    pools = random_pools(seed=21, count=30, max_m=10)
    pools = [(v, c) for v, c in pools if len(v) == 10] + [
        (["a", "a", "b", "b", "c", None, "a", "c", "b", "b"], "b"),
        (["a"] * 4 + ["b"] * 4 + [None] * 2, "a"),
    ]
    votes_pp = [v for v, _ in pools]
    correct_pp = [c for _, c in pools]
    exact = majority_at_k_curves(votes_pp, correct_pp)
    mc, se = majority_at_k_monte_carlo_curves(votes_pp, correct_pp, draws=2000, rng=5, return_se=True)
    assert mc.shape == exact.shape == se.shape == (len(pools), 10)
    bound = np.sqrt(exact * (1 - exact) / 2000)
    assert np.all(np.abs(mc - exact) <= 5 * bound + 1e-12)
    assert np.all(se <= np.sqrt(0.25 / 1999) + 1e-12)
    np.testing.assert_allclose(mc[:, -1], exact[:, -1], atol=1e-12)  # k = m: every draw is the pool


# ----------------------------------------------------------------------------- pass@k


def test_pass_at_k_matches_exact_combinatorics():
    for m in range(1, 21):
        for c in range(m + 1):
            for k in range(1, m + 1):
                exact = 1 - Fraction(math.comb(m - c, k), math.comb(m, k))
                got = pass_at_k(m, c, k)
                assert got == pytest.approx(float(exact), abs=1e-14, rel=0), (m, c, k)
                if k > m - c:
                    assert got == 1.0  # exact, not merely close


def test_pass_at_k_curves_match_scalar_and_are_monotone():
    m = 20
    num_correct = np.arange(m + 1)
    curves = pass_at_k_curves(num_correct, m)
    assert curves.shape == (m + 1, m)
    for c in range(m + 1):
        np.testing.assert_allclose(
            curves[c], [pass_at_k(m, c, k) for k in range(1, m + 1)], rtol=0, atol=1e-14
        )
    assert np.all(np.diff(curves, axis=1) >= -1e-15)  # non-decreasing in k
    assert np.all(np.diff(curves, axis=0) >= -1e-15)  # and in c
    np.testing.assert_array_equal(curves[:, -1], (num_correct > 0).astype(float))  # pass@m = 1 iff c > 0
    np.testing.assert_allclose(curves[:, 0], num_correct / m, atol=1e-15)  # pass@1 = c / m
    sub = pass_at_k_curves([3, 0, 7], m, ks=[1, 4, 16])
    np.testing.assert_allclose(sub, [[pass_at_k(m, c, k) for k in (1, 4, 16)] for c in (3, 0, 7)], atol=1e-15)


def test_pass_at_k_large_pool_is_finite():
    got = pass_at_k(1024, 3, 512)
    assert got == pytest.approx(1 - (512 * 511 * 510) / (1024 * 1023 * 1022), abs=1e-14)
    curve = pass_at_k_curves([1, 10, 1000], 1024)
    assert np.all(np.isfinite(curve)) and np.all(np.diff(curve, axis=1) >= -1e-15)


# ----------------------------------------------------------------------------- expected max


def brute_expected_max(rewards, k) -> float:
    m = len(rewards)
    total = sum(max(rewards[i] for i in draw) for draw in itertools.product(range(m), repeat=k))
    return total / m**k


def test_expected_max_matches_bruteforce_with_ties():
    rng = np.random.default_rng(17)
    for _ in range(40):
        m = int(rng.integers(1, 6))
        rewards = [float(x) for x in rng.choice([-5.0, 0.0, 1.5, 1.5, 4.0, 12.0], size=m)]  # ties likely
        for k in range(1, 5):
            assert expected_max_at_k(rewards, k) == pytest.approx(brute_expected_max(rewards, k), abs=1e-12)
    assert expected_max_at_k([2.0, 2.0, 2.0], 3) == pytest.approx(2.0, abs=1e-15)
    assert expected_max_at_k([0.0, 1.0], 1) == pytest.approx(0.5)
    assert expected_max_at_k([0.0, 1.0], 2) == pytest.approx(0.75)


def test_expected_max_curves_match_scalar_and_are_monotone():
    rng = np.random.default_rng(4)
    pools = rng.normal(size=(6, 32))
    pools[0, :16] = pools[0, 16:]  # ties
    curves = expected_max_at_k_curves(pools)
    assert curves.shape == (6, 32)
    for row, pool in zip(curves, pools, strict=True):
        np.testing.assert_allclose(row, [expected_max_at_k(pool, k) for k in range(1, 33)], atol=1e-12)
        assert row[0] == pytest.approx(pool.mean(), abs=1e-12)  # k = 1: the mean
        assert np.all(np.diff(row) >= -1e-12)  # non-decreasing in k
        assert row[-1] <= pool.max() + 1e-12
    far = expected_max_at_k_curves(pools, ks=[1, 64, 10_000])  # budgets beyond m are fine (with replacement)
    assert np.all(far[:, 2] <= pools.max(axis=1) + 1e-12) and np.all(far[:, 2] >= far[:, 1] - 1e-12)
    ragged = expected_max_at_k_curves([[1.0, 3.0], [0.0, 0.0, 5.0]], ks=[1, 2])
    np.testing.assert_allclose(ragged, [[2.0, 2.5], [5 / 3, 5 * (1 - 4 / 9)]], atol=1e-14)


# ----------------------------------------------------------------------------- plurality vote


def test_plurality_vote():
    assert plurality_vote([None, None]) is None
    assert plurality_vote([]) is None
    assert plurality_vote(["b", "a", "a", None, None, None]) == "a"  # invalid answers never win
    assert plurality_vote(["b", "a", "a", "b", "c"]) == "b"  # tie: first appearance without rng
    rng = np.random.default_rng(0)
    wins = Counter(plurality_vote(["b", "a", "a", "b", "c", None], rng=rng) for _ in range(2000))
    assert set(wins) == {"a", "b"}
    assert abs(wins["a"] - 1000) < 5 * math.sqrt(2000 * 0.25)  # uniform tie-break
    assert plurality_vote(["x", "y", "y"], rng=3) == "y"


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: pass_at_k(10, 2, 0), "k"),
        (lambda: pass_at_k(10, 2, 11), "k"),
        (lambda: pass_at_k(10, -1, 3), "c"),
        (lambda: pass_at_k(10, 11, 3), "c"),
        (lambda: pass_at_k(0, 0, 1), "m"),
        (lambda: pass_at_k_curves([1, 2], 5, ks=[0, 1]), "ks"),
        (lambda: pass_at_k_curves([1, 2], 5, ks=[6]), "ks"),
        (lambda: pass_at_k_curves([1, 6], 5), "num_correct"),
        (lambda: pass_at_k_curves([-1], 5), "num_correct"),
        (lambda: majority_at_k(["a", "b"], "a", 0), "k"),
        (lambda: majority_at_k(["a", "b"], "a", 3), "k"),
        (lambda: majority_at_k([], "a", 1), "votes"),
        (lambda: majority_at_k_curves([["a"], ["b"]], ["a"]), "correct_per_problem"),
        (lambda: majority_at_k_curves([["a", "b"]], ["a"], ks=[0]), "ks"),
        (lambda: majority_at_k_curves([["a", "b"]], ["a"], ks=[3]), "ks"),
        (lambda: majority_at_k_curves([["a", "b"], ["a"]], ["a", "a"]), "ks"),
        (lambda: majority_at_k_monte_carlo(["a", "b"], "a", 3), "k"),
        (lambda: majority_at_k_monte_carlo(["a", "b"], "a", 1, draws=0), "draws"),
        (lambda: expected_max_at_k([1.0, 2.0], 0), "k"),
        (lambda: expected_max_at_k([], 1), "rewards"),
        (lambda: expected_max_at_k([1.0, float("nan")], 1), "rewards"),
        (lambda: expected_max_at_k_curves([[1.0, 2.0]], ks=[0]), "ks"),
        (lambda: expected_max_at_k_curves([[1.0, 2.0], [1.0]]), "ks"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"(?<![A-Za-z_]){name}(?![A-Za-z_])"):
        call()
