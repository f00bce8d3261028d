"""The plurality vote and its tie rule: the one definition every majority-vote computation uses.

- Only valid answers vote: a vote key of ``None`` (unparseable, invalid) takes a sample's slot and never wins.
- The valid keys with the most votes tie for the win (one key: a plain win).
- A tie is broken uniformly at random, so the expected outcome of a vote is
  ``(number of correct keys among the tied) / (number of tied keys)``; no valid answer scores 0.
- Correct keys: the gold key (when known) and the key of every candidate scored correct (equivalent
  answers with different keys, e.g. "1/2" and "0.5", are each correct).

Used by the majority strategy's test-time outcome (strategies/majority.py ``Majority.aggregate``), the
leave-one-out estimator's f (strategies/majority_loo.py ``vote_value``) and the evaluation's vote
(evaluation/majority_vote.py ``plurality_vote``). The exact maj@k estimator (majority_vote.py) computes the
expectation of :func:`expected_outcome` over every k-subset of a pool in closed form (a tie with ``t``
others scores ``1/(t+1)``); tests/test_voting.py checks that all of them agree on random pools.
Standard library only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

__all__ = ["correct_keys", "expected_outcome", "plurality_outcome", "tally", "tied_winners"]


def tally(votes: Iterable[Hashable | None]) -> Counter:
    """Votes per valid key (``None`` left out), in order of first appearance."""
    return Counter(v for v in votes if v is not None)


def tied_winners(votes: Iterable[Hashable | None]) -> list[Hashable]:
    """The valid keys with the most votes, in order of first appearance; [] when no vote is valid."""
    counts = tally(votes)
    top = max(counts.values(), default=0)
    return [key for key, n in counts.items() if n == top] if top > 0 else []


def expected_outcome(counts: Sequence[int], key_correct: Sequence[bool]) -> float:
    """The rule on a tally: ``counts[j]`` votes for key j, ``key_correct[j]`` whether key j is correct.

    The keys with the top count (> 0) tie; the result is the share of correct keys among them (the
    expected outcome of a uniform tie-break); 0.0 when no key has a vote."""
    top = max(counts, default=0)
    if top <= 0:
        return 0.0
    tied = [bool(ok) for n, ok in zip(counts, key_correct, strict=True) if n == top]
    return sum(tied) / len(tied)


def correct_keys(votes: Sequence[Hashable | None], correct: Sequence[bool],
                 gold: Hashable | None = None) -> set[Hashable]:
    """The correct keys of a pool: ``gold`` (when not None) and the key of every candidate flagged correct."""
    keys = {key for key, ok in zip(votes, correct, strict=True) if ok and key is not None}
    if gold is not None:
        keys.add(gold)
    return keys


def plurality_outcome(votes: Sequence[Hashable | None], correct: Sequence[bool],
                      gold: Hashable | None = None) -> float:
    """:func:`expected_outcome` of the vote over ``votes``, the correct keys given by :func:`correct_keys`."""
    good = correct_keys(votes, correct, gold)
    counts = tally(votes)
    return expected_outcome(list(counts.values()), [key in good for key in counts])
