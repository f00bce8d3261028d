"""The leave-one-out majority-vote policy gradient of Tang, Zheng, Synnaeve & Munos (ICML 2025,
arXiv 2503.19595), as the RL estimator `strategy.estimator=loo` of the majority strategy.

The paper optimises a k-sample objective E[f(y_1..y_k)] with the score-function gradient and, for each
sample, the leave-one-out control variate f(y_-i), the objective of the other k-1 samples (it does not
depend on y_i, so the estimator stays unbiased):

    grad E[f] = E[ sum_i (f(y_1..y_k) - f(y_-i)) grad log pi(y_i) ].

Here k = N = strategy.n and f = 1[the plurality answer of the N samples is correct]; a group holds
M >= N rollouts of one prompt, so every N-subset containing rollout i is used (see loo_majority_advantages).
Pure functions on answer keys: no trainer, task or model imports.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import torch

from ..voting import expected_outcome
from .base import Group
from .registry import register_estimator

# Largest C(M-1, N-1) (the (N-1)-subsets of the other rollouts) enumerated for one group.
MAX_SUBSETS = 2_000_000


def vote_value(valid_counts: Sequence[int], key_correct: Sequence[bool]) -> float:
    """f of one multiset of answers: the plurality vote over the VALID answers, ties split uniformly.

    valid_counts[j] = how many samples gave answer key j; key_correct[j] = whether key j is correct.
    Invalid answers (vote key None) are not in the counts: they take a sample's slot but never win.
    With t keys tied at the top, f = (# correct among them) / t (the expected outcome of a uniform
    tie-break, as maj@k in evaluation/majority_vote.py); no valid answer at all gives f = 0.
    The rule is voting.expected_outcome, shared with the strategies and the evaluation.
    """
    return expected_outcome(valid_counts, key_correct)


def answer_categories(vote_keys: Sequence[Hashable | None],
                      correct: Sequence[bool]) -> tuple[list[int], list[bool]]:
    """(category of each rollout, correctness of each valid category).

    Valid keys get categories 0..K-1 in order of first appearance; an invalid answer (None) gets -1.
    A key is correct when any of its rollouts is correct (keys are canonical answers, so all of a key's
    rollouts normally agree); several distinct correct keys each count, as in the maj@k evaluation.
    """
    index: dict[Hashable, int] = {}
    key_correct: list[bool] = []
    cats: list[int] = []
    for key, ok in zip(vote_keys, correct, strict=True):
        if key is None:
            cats.append(-1)
            continue
        if key not in index:
            index[key] = len(key_correct)
            key_correct.append(False)
        j = index[key]
        key_correct[j] = key_correct[j] or bool(ok)
        cats.append(j)
    return cats, key_correct


def _count_vectors(pool: Sequence[int], size: int) -> Iterator[tuple[tuple[int, ...], int]]:
    """Every (x, multiplicity): 0 <= x_j <= pool_j, sum x = size, multiplicity = prod_j C(pool_j, x_j)
    (the number of size-subsets of the pool's items with x_j items of category j)."""
    if not pool:
        if size == 0:
            yield (), 1
        return
    rest = sum(pool[1:])
    for x0 in range(max(0, size - rest), min(pool[0], size) + 1):
        for tail, mult in _count_vectors(pool[1:], size - x0):
            yield (x0, *tail), math.comb(pool[0], x0) * mult


def loo_majority_advantages(vote_keys: Sequence[Hashable | None], correct: Sequence[bool], n: int) -> torch.Tensor:
    """Leave-one-out majority-vote advantage of each of a group's M rollouts, float64 [M].

        A_i = 1 / C(M-1, N-1) * sum over N-subsets S of {1..M} with i in S of [ f(S) - f(S minus i) ]

    f = vote_value (plurality of the valid answers correct; ties split; invalid answers never win;
    f(empty) = 0). With M = N this is the paper's f(y_1..y_N) - f(y_-i) exactly. With M > N it averages
    that over the N-subsets containing i (our generalisation): averaging the paper's unbiased estimator
    over all C(M, N) subsets gives (N / M) * sum_i A_i grad log pi(y_i), so

        E[ (N / M) * sum_i A_i grad log pi(y_i) ] = grad E[f(Y_1..Y_N)],

    i.e. TRL's mean over completions of A_i grad log pi(y_i) is grad E[f] / N (a constant step size).
    A_i depends on rollout i only through its answer, so it is computed once per answer by enumerating
    the other rollouts' (N-1)-subsets as count vectors. Properties: an invalid answer gets 0 (it never
    changes a vote); a group of one answer gets 0 when N >= 2; an answer gets a non-zero value only where
    it can change the vote of some subset. N = 1 gives A_i = [rollout i valid and correct] (no baseline).
    """
    m = len(vote_keys)
    if int(n) != n or not 1 <= n <= m:
        raise ValueError(f"the leave-one-out majority estimator needs 1 <= N <= M rollouts, got N={n}, M={m}")
    n = int(n)
    if math.comb(m - 1, n - 1) > MAX_SUBSETS:
        raise ValueError(f"C(M-1, N-1) = C({m - 1}, {n - 1}) subsets are too many to enumerate "
                         f"(limit {MAX_SUBSETS}); lower strategy.n or objective.num_generations")
    cats, key_correct = answer_categories(vote_keys, correct)
    k = len(key_correct)
    counts = [0] * (k + 1)  # valid keys 0..K-1, then the invalid answers in slot K
    for c in cats:
        counts[c if c >= 0 else k] += 1
    total = math.comb(m - 1, n - 1)
    per_cat: dict[int, float] = {-1: 0.0}  # an invalid answer never changes the vote
    for c in set(cats) - {-1}:
        pool = list(counts)
        pool[c] -= 1  # the other M-1 rollouts
        acc = 0.0
        for x, mult in _count_vectors(pool, n - 1):
            without = vote_value(x[:k], key_correct)
            with_i = vote_value([x[j] + (j == c) for j in range(k)], key_correct)
            acc += mult * (with_i - without)
        per_cat[c] = acc / total
    return torch.tensor([per_cat[c] for c in cats], dtype=torch.float64)


@register_estimator("loo", ("majority",), target="maj@k: the plurality vote over k = strategy.n samples is correct",
                    needs_vote_keys=True, paper="Tang, Zheng, Synnaeve & Munos, ICML 2025, arXiv 2503.19595")
def loo_majority_estimator(group: Group, k: int) -> torch.Tensor:
    """strategy=majority strategy.estimator=loo: loo_majority_advantages of one group, k = strategy.n."""
    if group.vote_keys is None:
        raise ValueError("the leave-one-out majority estimator needs the rollouts' vote keys")
    return loo_majority_advantages(group.vote_keys, torch.as_tensor(group.correct).reshape(-1).tolist(), k)
