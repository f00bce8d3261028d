"""One plurality vote and tie rule (cat_experiments/voting.py, issue 23): the majority strategy's outcome
(`Majority.aggregate`), the leave-one-out estimator's f (`vote_value`), the evaluation's vote
(`plurality_vote`) and the maj@k estimators agree on random pools, ties and invalid (None) votes included.
The exact maj@k estimator is the reference: it is the expectation of the rule over the k-subsets of a pool."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cat_experiments.evaluation.majority_vote import majority_at_k, plurality_vote
from cat_experiments.evaluation.monte_carlo import majority_at_k_monte_carlo
from cat_experiments.strategies import Majority
from cat_experiments.strategies.majority_loo import answer_categories, vote_value
from cat_experiments.voting import correct_keys, expected_outcome, plurality_outcome, tally, tied_winners

KEYS = ["a", "b", "c", "d"]


@st.composite
def pools(draw, max_size: int = 10):
    """(votes, correct flags, gold key or None): some keys correct, every vote of a correct key flagged
    correct (consistent scoring, as the tasks score), the gold key one of the correct keys or unknown."""
    votes = draw(st.lists(st.sampled_from([None, *KEYS]), min_size=1, max_size=max_size))
    good = draw(st.sets(st.sampled_from(KEYS), max_size=3))
    gold = draw(st.sampled_from([None, *sorted(good)]))
    return votes, [v in good for v in votes], gold


def reference(votes, correct, gold, k: int) -> float:
    """maj@k as the evaluation computes it: the sum over the correct keys of the exact P(key wins)."""
    keys = correct_keys(votes, correct, gold)
    return sum(majority_at_k(votes, key, k) for key in keys)


def loo_f(votes, correct) -> float:
    cats, key_correct = answer_categories(votes, correct)
    counts = [0] * len(key_correct)
    for c in cats:
        if c >= 0:
            counts[c] += 1
    return vote_value(counts, key_correct)


def uniform_tie_break(votes, correct, gold) -> float:
    """The expected outcome of plurality_vote's random tie-break, from the winners it actually returns."""
    good = correct_keys(votes, correct, gold)
    seen = {plurality_vote(votes, rng=seed) for seed in range(120)}
    if seen == {None}:
        return 0.0
    return sum(key in good for key in seen) / len(seen)


@settings(max_examples=300, deadline=None)
@given(pools())
def test_all_votes_agree_on_a_whole_pool(pool):
    votes, correct, gold = pool
    m = len(votes)
    ref = reference(votes, correct, gold, m)  # k = m: the one subset is the pool itself
    assert Majority(8).aggregate(correct, votes, correct_key=gold) == pytest.approx(ref, abs=1e-12)
    assert plurality_outcome(votes, correct, gold) == pytest.approx(ref, abs=1e-12)
    assert uniform_tie_break(votes, correct, gold) == pytest.approx(ref, abs=1e-12)
    keys = correct_keys(votes, correct, gold)
    assert sum(majority_at_k_monte_carlo(votes, key, m, draws=1, rng=0) for key in keys) == pytest.approx(ref)
    if gold is None or gold in votes:  # the leave-one-out f knows only the pool's flags, not the gold key
        assert loo_f(votes, correct) == pytest.approx(ref, abs=1e-12)
    winners = tied_winners(votes)
    assert plurality_vote(votes) == (winners[0] if winners else None)  # rng=None: the first tied key


@settings(max_examples=150, deadline=None)
@given(pools(max_size=8), st.data())
def test_majority_at_k_is_the_rule_averaged_over_k_subsets(pool, data):
    """maj@k = the mean of the rule over every k-subset (without replacement): the estimator, the strategy's
    outcome and the leave-one-out f give the same number at every budget."""
    votes, correct, gold = pool
    k = data.draw(st.integers(1, len(votes)))
    subsets = list(itertools.combinations(range(len(votes)), k))
    by_strategy = sum(Majority(8).aggregate([correct[i] for i in s], [votes[i] for i in s], correct_key=gold)
                      for s in subsets) / len(subsets)
    assert by_strategy == pytest.approx(reference(votes, correct, gold, k), abs=1e-9)
    if gold is None or gold in votes:
        by_loo = sum(loo_f([votes[i] for i in s], [correct[i] for i in s]) for s in subsets) / len(subsets)
        assert by_loo == pytest.approx(by_strategy, abs=1e-12)


def test_ties_and_invalid_votes():
    assert expected_outcome([2, 2, 1], [True, False, True]) == 0.5  # a tie of two: half the time correct
    assert expected_outcome([2, 2, 2], [True, True, False]) == pytest.approx(2 / 3)  # two correct keys tie
    assert expected_outcome([0, 0], [True, False]) == 0.0 and expected_outcome([], []) == 0.0
    votes = [None, None, None, "7", "12", "12"]
    assert tally(votes) == {"7": 1, "12": 2} and tied_winners(votes) == ["12"]  # invalid answers never win
    assert tied_winners([None, None]) == [] and plurality_vote([None, None]) is None
    assert plurality_outcome(votes, [False, False, False, False, True, True]) == 1.0


def test_two_correct_keys_in_a_tie_count_twice_as_in_maj_at_k():
    """Before issue 23, `Majority.aggregate` without a correct_key picked one correct key arbitrarily: a
    three-way tie of "1/2", "0.5" (both correct) and "7" scored 1/3; maj@k (and the leave-one-out f) score 2/3."""
    votes, correct = ["1/2", "0.5", "7"], [True, True, False]
    assert Majority(4).aggregate(correct, votes) == pytest.approx(2 / 3)
    assert reference(votes, correct, None, 3) == pytest.approx(2 / 3)
    assert loo_f(votes, correct) == pytest.approx(2 / 3)
    # the gold key counts even when no candidate voting it was flagged (inconsistent scoring)
    assert Majority(4).aggregate([False, False, False], ["a", "a", "b"], correct_key="a") == 1.0


def test_the_default_curves_do_not_change():
    """maj@k values computed before the rule moved to voting.py (commit d7b2c00), at a few budgets."""
    votes = ["a", "b", "a", None, "c", "b", "a", None, "d", "b"]
    got = [majority_at_k(votes, "a", k) for k in (1, 2, 3, 5, 10)]
    assert got == pytest.approx(EXPECTED_DEFAULT, abs=1e-12)
    assert math.isclose(majority_at_k(votes, "b", 10), 0.5)  # "a" and "b" tie at 3: half each


EXPECTED_DEFAULT = [0.3, 0.36666666666666664, 0.39166666666666666, 0.4623015873015873, 0.5]
