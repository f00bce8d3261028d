"""The paper's Monte Carlo maj@k: draw ``k`` candidates without replacement many times and vote (a
reference for the exact estimator in majority_vote.py; benchmarks/estimators.py compares the two)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from ._checks import as_int, check_budget, resolve_ks

__all__ = ["majority_at_k_monte_carlo", "majority_at_k_monte_carlo_curves"]


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _encode(votes: Sequence[Hashable | None], correct: Hashable | None) -> tuple[np.ndarray, int, int]:
    """Integer codes: -1 invalid, 0..n-1 valid keys in order of first appearance; correct code or -1."""
    table: dict[Hashable, int] = {}
    codes = np.empty(len(votes), dtype=np.int64)
    for i, v in enumerate(votes):
        codes[i] = -1 if v is None else table.setdefault(v, len(table))
    c = table.get(correct, -1) if correct is not None else -1
    return codes, len(table), c


def _score_counts(counts: np.ndarray, c: int) -> np.ndarray:
    """Score of each draw from its valid-key counts ``[..., n_keys]``: 1/(#tied top) if correct is top."""
    if c < 0 or counts.shape[-1] == 0:
        return np.zeros(counts.shape[:-1])
    top = counts.max(axis=-1)
    n_top = (counts == top[..., None]).sum(axis=-1)
    win = (counts[..., c] == top) & (top > 0)
    return np.where(win, 1.0 / n_top, 0.0)


def majority_at_k_monte_carlo(
    votes: Sequence[Hashable | None],
    correct: Hashable | None,
    k: int,
    draws: int = 500,
    rng: np.random.Generator | int | None = None,
) -> float:
    """The paper's sampling estimate of maj@k: mean score over ``draws`` random ``k``-subsets.

    Each subset is drawn uniformly without replacement from the pool; the score of a subset is
    1 if the correct key is the unique plurality winner among valid keys, ``1/(t+1)`` if it ties
    with ``t`` others (the expectation of a uniform tie-break, which lowers the variance without
    changing the mean), and 0 otherwise (also when the subset holds no valid answer).  The mean is
    an unbiased estimate of :func:`majority_at_k`.
    """
    codes, n_keys, c = _encode(list(votes), correct)
    m = codes.size
    if m == 0:
        raise ValueError("votes must be a non-empty pool of answers")
    k = check_budget(k, m, "k")
    draws = as_int(draws, "draws")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got draws={draws}")
    gen = _rng(rng)
    idx = np.argsort(gen.random((draws, m)), axis=1)[:, :k]
    drawn = codes[idx]
    counts = (drawn[..., None] == np.arange(n_keys)).sum(axis=1)
    return float(_score_counts(counts, c).mean())


def majority_at_k_monte_carlo_curves(
    votes_per_problem: Sequence[Sequence[Hashable | None]],
    correct_per_problem: Sequence[Hashable | None],
    ks: Iterable[int] | None = None,
    draws: int = 500,
    rng: np.random.Generator | int | None = None,
    return_se: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Monte Carlo maj@k (see :func:`majority_at_k_monte_carlo`) for many problems and budgets.

    For each problem, ``draws`` random permutations of the pool are drawn; the first ``k`` entries
    of a permutation are a uniform ``k``-subset, so every budget is estimated from the same
    permutations (``draws`` subsets per budget).  Returns ``[num_problems, len(ks)]``, and with
    ``return_se=True`` also the per-entry standard error ``sqrt(sample variance / draws)``.
    """
    pools = [list(v) for v in votes_per_problem]
    correct = list(correct_per_problem)
    if len(pools) != len(correct):
        raise ValueError(
            f"correct_per_problem has {len(correct)} entries but votes_per_problem has {len(pools)} pools"
        )
    if any(len(v) == 0 for v in pools):
        raise ValueError("votes_per_problem must hold non-empty pools")
    sizes = {len(v) for v in pools}
    m_common = next(iter(sizes)) if len(sizes) == 1 else None
    kk = resolve_ks(ks, m_common, upper=min(sizes) if sizes else None)
    draws = as_int(draws, "draws")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got draws={draws}")
    gen = _rng(rng)
    est = np.zeros((len(pools), kk.size))
    se = np.zeros((len(pools), kk.size))
    count_dtype = np.int16 if max(sizes) < 2**15 else np.int64
    for i, (votes, corr) in enumerate(zip(pools, correct, strict=True)):
        codes, n_keys, c = _encode(votes, corr)
        if c < 0:
            continue
        m = codes.size
        drawn = codes[np.argsort(gen.random((draws, m)), axis=1)]  # [draws, m]: rows are random permutations
        # counts[key, draw, k-1] = occurrences of key among the first k of the permutation
        onehot = drawn[None, :, :] == np.arange(n_keys)[:, None, None]
        counts = np.cumsum(onehot, axis=2, dtype=count_dtype)[:, :, kk - 1]
        top = counts.max(axis=0)
        at_top = counts == top
        scores = (at_top[c] & (top > 0)) / at_top.sum(axis=0, dtype=count_dtype)  # [draws, len(ks)]
        est[i] = scores.mean(axis=0)
        if draws > 1:
            se[i] = np.sqrt(scores.var(axis=0, ddof=1) / draws)
    return (est, se) if return_se else est
