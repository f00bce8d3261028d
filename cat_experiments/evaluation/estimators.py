"""Exact test-time scaling-curve estimators (method.md section 3).

One pool of ``m`` candidates is sampled per problem and every budget ``k`` is computed from it:

- :func:`pass_at_k` -- unbiased pass@k of Chen et al. (2021), ``1 - C(m-c, k) / C(m, k)``.
- :func:`majority_at_k` -- the *exact* expected accuracy of a plurality vote over a uniformly random
  ``k``-subset of the pool drawn without replacement (multivariate hypergeometric), with invalid
  answers taking slots but never winning and ties broken uniformly at random.
- :func:`expected_max_at_k` -- expected maximum reward of ``k`` draws *with* replacement.

Each has an all-budget, many-problem form (``*_curves``) returning an array of shape
``[num_problems, len(ks)]``; ``ks=None`` means every budget ``1..m``.
:func:`majority_at_k_monte_carlo` (and its all-budget form) is the paper's sampling estimator,
kept as a reference.

Only numpy and the standard library are used.

The majority-vote estimators live in majority_vote.py and the Monte Carlo reference in monte_carlo.py;
both are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ._checks import as_int, check_budget, resolve_ks
from .majority_vote import majority_at_k, majority_at_k_curves, plurality_vote
from .monte_carlo import majority_at_k_monte_carlo, majority_at_k_monte_carlo_curves

__all__ = [
    "pass_at_k",
    "pass_at_k_curves",
    "majority_at_k",
    "majority_at_k_curves",
    "majority_at_k_monte_carlo",
    "majority_at_k_monte_carlo_curves",
    "expected_max_at_k",
    "expected_max_at_k_curves",
    "plurality_vote",
]


# ----------------------------------------------------------------------------- pass@k


def pass_at_k(m: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` correct among ``m`` samples (Chen et al., 2021).

    ``pass@k = 1 - C(m-c, k) / C(m, k)``, the probability that a uniformly random ``k``-subset of the
    pool (without replacement) contains at least one correct sample.  Computed in product form,
    ``C(m-c, k)/C(m, k) = prod_{i=0}^{k-1} (m-c-i)/(m-i) = prod_{i=0}^{c-1} (m-k-i)/(m-i)`` (the
    shorter of the two), so nothing overflows; it is exactly 1.0 when ``k > m - c``.

    Raises ValueError (naming the argument) for ``m < 1``, ``k < 1``, ``k > m``, ``c < 0`` or ``c > m``.
    """
    m = as_int(m, "m")
    c = as_int(c, "c")
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    if c < 0:
        raise ValueError(f"c must be >= 0, got c={c}")
    if c > m:
        raise ValueError(f"c must be <= m={m}, got c={c}")
    k = check_budget(k, m, "k")
    if c == 0:
        return 0.0
    if k > m - c:
        return 1.0
    fail = 1.0
    if k <= c:
        for i in range(k):
            fail *= (m - c - i) / (m - i)
    else:
        for i in range(c):
            fail *= (m - k - i) / (m - i)
    return 1.0 - fail


def pass_at_k_curves(num_correct: Any, m: int, ks: Iterable[int] | None = None) -> np.ndarray:
    """pass@k for many problems and budgets at once: array ``[len(num_correct), len(ks)]``.

    Entry ``[p, i]`` is ``1 - C(m-c_p, k_i)/C(m, k_i)`` (see :func:`pass_at_k`), computed as
    ``1 - prod_{i<k} (m-c-i)/(m-i)`` with one cumulative product per problem.  All problems share the
    pool size ``m``; ``ks=None`` means every budget ``1..m``.
    """
    m = as_int(m, "m")
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    c = np.asarray(num_correct)
    if c.ndim != 1:
        raise ValueError(f"num_correct must be a 1-D integer array, got shape {c.shape}")
    if c.size and not (np.issubdtype(c.dtype, np.integer) or np.all(np.mod(c, 1) == 0)):
        raise ValueError("num_correct must hold integers")
    c = c.astype(np.int64)
    if c.size and c.min() < 0:
        raise ValueError(f"num_correct must be >= 0, got min(num_correct)={int(c.min())}")
    if c.size and c.max() > m:
        raise ValueError(f"num_correct must be <= m={m}, got max(num_correct)={int(c.max())}")
    kk = resolve_ks(ks, m, upper=m)
    if kk.size == 0 or c.size == 0:
        return np.zeros((c.size, kk.size))
    i = np.arange(m, dtype=np.float64)
    factors = np.maximum((m - c[:, None] - i[None, :]), 0.0) / (m - i[None, :])
    fail = np.cumprod(factors, axis=1)  # fail[:, k-1] = C(m-c, k) / C(m, k)
    return 1.0 - fail[:, kk - 1]


# ----------------------------------------------------------------------------- expected max


def _rewards_array(rewards: Any, name: str = "rewards") -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} must be finite")
    return r


def _max_weights(m: int, kk: np.ndarray) -> np.ndarray:
    """``w[k, i] = (i/m)^k - ((i-1)/m)^k`` for i = 1..m, written as ``(i/m)^k (1 - (1-1/i)^k)``."""
    i = np.arange(1, m + 1, dtype=np.float64)
    k = kk.astype(np.float64)[:, None]
    top = np.exp(k * np.log(i / m)[None, :])
    log_keep = np.full(m, -np.inf)  # log(1 - 1/i); -inf at i = 1, where the step is exactly 1
    log_keep[1:] = np.log1p(-1.0 / i[1:])
    step = -np.expm1(k * log_keep[None, :])  # 1 - (1 - 1/i)^k
    return top * step


def expected_max_at_k(rewards: Any, k: int) -> float:
    """Expected maximum reward of ``k`` draws *with* replacement from the pool ``rewards``.

    ``E = sum_{i=1}^{m} r_(i) [ (i/m)^k - ((i-1)/m)^k ]`` with ``r_(1) <= ... <= r_(m)`` the rewards
    sorted ascending (``(i/m)^k`` is the probability that all ``k`` draws have rank ``<= i``).
    ``k`` may exceed ``m``.  Raises ValueError for ``k < 1`` or an empty / non-finite pool.
    """
    r = np.sort(_rewards_array(rewards))
    k = as_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    w = _max_weights(r.size, np.array([k]))[0]
    return float(w @ r)


def expected_max_at_k_curves(rewards_per_problem: Any, ks: Iterable[int] | None = None) -> np.ndarray:
    """Expected max reward (draws with replacement) for many problems and budgets at once.

    Returns ``[num_problems, len(ks)]`` with entry ``[p, i]`` equal to
    :func:`expected_max_at_k` ``(rewards_per_problem[p], ks[i])``:
    ``sum_j r_(j) [ (j/m)^k - ((j-1)/m)^k ]``.  Each pool is a 1-D array; pools may differ in size
    (then ``ks`` must be given).  ``ks=None`` means every budget ``1..m`` (common ``m``).  Budgets
    must be ``>= 1`` and may exceed ``m``.
    """
    pools = list(rewards_per_problem)  # a 2-D array gives its rows
    sizes = {np.asarray(p).size for p in pools}
    m_common = sizes.pop() if len(sizes) == 1 else None
    kk = resolve_ks(ks, m_common, upper=None)
    out = np.empty((len(pools), kk.size))
    by_size: dict[int, list[int]] = {}
    for idx, pool in enumerate(pools):
        by_size.setdefault(np.asarray(pool).size, []).append(idx)
    for m, idxs in by_size.items():
        r = np.sort(np.stack([_rewards_array(pools[i], "rewards_per_problem") for i in idxs]), axis=1)
        out[idxs] = r @ _max_weights(m, kk).T
    return out
