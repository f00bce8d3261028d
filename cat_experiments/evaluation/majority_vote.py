"""Majority vote over a pool: the exact maj@k at every budget, and the paper's Monte Carlo reference.

- :func:`majority_at_k` / :func:`majority_at_k_curves` -- the *exact* expected accuracy of a plurality
  vote over a uniformly random ``k``-subset of the pool drawn without replacement (multivariate
  hypergeometric), with invalid answers taking slots but never winning and ties broken uniformly at random.
- the paper's Monte Carlo estimator of the same quantity, kept as a reference, is in monte_carlo.py.
- :func:`plurality_vote` -- the vote itself.

Only numpy and the standard library are used.

How the exact majority vote is computed
---------------------------------------
Let the pool hold ``a`` copies of the correct key, other valid keys with counts ``b_1 >= b_2 >= ...``
and ``u`` invalid answers (``m = a + sum b_i + u``).  The correct key wins a draw of size ``k`` in
which it appears ``j >= 1`` times iff every other valid key appears at most ``j`` times; if ``t``
of them appear exactly ``j`` times the (uniform) tie-break gives it probability ``1/(t+1)``.  So

    maj@k = sum_{j>=1} sum_t 1/(t+1) * N_{j,t}(k) / C(m, k)

where ``N_{j,t}(k)`` counts the ``k``-subsets with ``j`` correct answers, ``t`` other keys tied at
``j`` and no other key above ``j``.  For each ``j`` the generating polynomial in ``z`` (number
drawn) of those subsets is the product of one factor per group of the pool,

    C(a, j) z^j  *  (1+z)^{R_j}  *  prod_{i: b_i >= j} ( sum_{x<j} C(b_i, x) z^x  +  y C(b_i, j) z^j )

(``R_j`` = invalid answers plus the keys with ``b_i < j``, which can never reach ``j``; ``y`` marks a
tie) and its coefficient of ``z^k y^t`` is ``N_{j,t}(k)``: one polynomial product gives *every*
budget at once.

To keep the numbers inside float64 for large pools (``C(1024, 512)`` is about 4.5e306) every
factor is *tilted*: ``C(b, x)`` is replaced by the binomial pmf ``C(b, x) p^x (1-p)^(b-x)``, i.e.
each candidate is included independently with probability ``p``.  All coefficients are then
probabilities in ``[0, 1]``, and dividing the coefficient of ``z^k`` by the tilted total
``C(m, k) p^k (1-p)^(m-k)`` gives back the uniform-``k``-subset expectation exactly (conditioning
independent inclusion on the total size gives a uniform subset).  ``p = 1/2`` (every coefficient
is an integer times ``2^-b``) is used whenever ``C(m, k) 2^-m >= exp(-600)`` for all requested
budgets (``m`` up to about 865); otherwise the budgets are split into bands, each with its own
dyadic tilt ``p = n / 2^s`` chosen near ``k/m``.  The tilted binomial rows are computed as exact
big-integer ratios, so every input to the products is correctly rounded.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache

import numpy as np

from ..voting import tally, tied_winners
from ._checks import LOG_FLOOR, check_budget, resolve_ks

__all__ = [
    "majority_at_k",
    "majority_at_k_curves",
    "plurality_vote",
]

# ----------------------------------------------------------------------------- plurality vote


def plurality_vote(
    votes: Iterable[Hashable | None], rng: np.random.Generator | int | None = None
) -> Hashable | None:
    """Winner of a plurality vote among the valid (non-``None``) keys of ``votes``.

    Returns ``None`` when there is no valid key.  A tie among the most frequent keys is broken
    uniformly at random with ``rng`` (a ``numpy.random.Generator`` or an int seed); with
    ``rng=None`` the tie goes deterministically to the tied key that appears *first* in ``votes``.
    The tied keys are voting.tied_winners, the rule shared with the strategies and maj@k.
    """
    tied = tied_winners(votes)
    if not tied:
        return None
    if rng is None or len(tied) == 1:
        return tied[0]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return tied[int(gen.integers(len(tied)))]


# ----------------------------------------------------------------------------- exact maj@k


def _pool_counts(
    votes: Iterable[Hashable | None], correct: Hashable | None, name: str = "votes"
) -> tuple[int, tuple[int, ...], int, int]:
    """(a, other valid counts sorted descending, u invalid, m) of one pool."""
    votes = list(votes)
    m = len(votes)
    if m == 0:
        raise ValueError(f"{name} must be a non-empty pool of answers")
    counts = tally(votes)
    u = m - sum(counts.values())
    a = counts.pop(correct, 0) if correct is not None else 0
    others = tuple(sorted(counts.values(), reverse=True))
    return a, others, u, m


@lru_cache(maxsize=4096)
def _tilted_row(b: int, n: int, s: int) -> np.ndarray:
    """Binomial pmf ``C(b, x) p^x (1-p)^(b-x)``, x = 0..b, for the dyadic tilt ``p = n / 2^s``.

    Each entry is ``C(b, x) n^x (2^s - n)^(b-x) / 2^(s b)``: an exact big-integer ratio, so the float
    is correctly rounded (underflowing gracefully to 0).  Read-only, cached."""
    d = 1 << s
    den = 1 << (s * b)
    if n == d - n:  # p = 1/2
        return _readonly([math.comb(b, x) / (1 << b) for x in range(b + 1)])
    pw_n = [1] * (b + 1)
    pw_q = [1] * (b + 1)
    for x in range(1, b + 1):
        pw_n[x] = pw_n[x - 1] * n
        pw_q[x] = pw_q[x - 1] * (d - n)
    return _readonly([math.comb(b, x) * pw_n[x] * pw_q[b - x] / den for x in range(b + 1)])


def _readonly(values: list[float]) -> np.ndarray:
    row = np.array(values, dtype=np.float64)
    row.flags.writeable = False
    return row


def _log_binom_pmf(m: int, k: np.ndarray, p: float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    return lg(m + 1.0) - lg(k + 1.0) - lg(m - k + 1.0) + k * math.log(p) + (m - k) * math.log1p(-p)


@lru_cache(maxsize=256)
def _tilt_bands_cached(m: int, ks: tuple[int, ...]) -> tuple[tuple[int, int, np.ndarray], ...]:
    uniq = np.array(ks, dtype=np.int64)
    if np.all(_log_binom_pmf(m, uniq, 0.5) >= -LOG_FLOOR):
        return ((1, 1, uniq),)
    s = max(10, m.bit_length() + 2)  # grid of tilts n / 2^s, finer than 1/(4m)
    d = 1 << s
    bands: list[tuple[int, int, np.ndarray]] = []
    todo = uniq
    while todo.size:
        k0 = int(todo[0])
        # Largest grid tilt n/d >= k0/m whose normaliser at k0 is still >= exp(-LOG_FLOOR / 2): the band
        # then reaches as far above k0 as it can (bisection; the normaliser falls as p grows past k0/m).
        lo = min(max(round(k0 / m * d), 1), d - 1)
        hi = d - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _log_binom_pmf(m, np.array([k0]), mid / d)[0] >= -LOG_FLOOR / 2:
                lo = mid
            else:
                hi = mid - 1
        ok = _log_binom_pmf(m, todo, lo / d) >= -LOG_FLOOR
        ok[0] = True
        bands.append((lo, s, todo[ok]))
        todo = todo[~ok]
    return tuple(bands)


def _tilt_bands(m: int, kk: np.ndarray) -> tuple[tuple[int, int, np.ndarray], ...]:
    """Split the budgets into bands ``(n, s, ks)``, each with a dyadic tilt ``p = n / 2^s`` whose
    normaliser ``C(m,k) p^k (1-p)^(m-k)`` stays >= exp(-LOG_FLOOR) on the band."""
    return _tilt_bands_cached(m, tuple(int(k) for k in np.unique(kk)))


_Profile = tuple[int, tuple[int, ...], int]  # (a correct, other valid counts sorted descending, u invalid)

# Largest gathered window tensor (elements) built at once by _batched_truncated_conv.
_CHUNK_ELEMENTS = 1 << 22


def _batched_truncated_conv(state: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``out[b, t, w] = sum_x kernel[b, x] * state[b, t, w - x]`` for w < L (one kernel per batch row).

    ``state`` is ``[B, T, L]``, ``kernel`` is ``[B, J]``; the output is truncated to length L."""
    bsz, depth, length = state.shape
    width = kernel.shape[1]
    if width <= 6:
        out = state * kernel[:, 0, None, None]
        for x in range(1, width):
            out[:, :, x:] += kernel[:, x, None, None] * state[:, :, : length - x]
        return out
    pad = np.zeros((bsz, depth, width - 1 + length))
    pad[:, :, width - 1 :] = state
    s0, s1, s2 = pad.strides
    windows = np.lib.stride_tricks.as_strided(
        pad, (bsz, depth, length, width), (s0, s1, s2, s2), writeable=False
    )
    rev = kernel[:, None, ::-1, None]  # [B, 1, J, 1]
    out = np.empty_like(state)
    step = max(1, _CHUNK_ELEMENTS // max(1, depth * length * width))
    for lo in range(0, bsz, step):
        hi = min(bsz, lo + step)
        out[lo:hi] = np.matmul(windows[lo:hi], rev[lo:hi])[..., 0]
    return out


def _maj_state(
    rest_rows: np.ndarray,
    act: np.ndarray,
    table: np.ndarray,
    rests: list[int],
    n_active: int,
    j: int,
    full: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Tie-weighted products of the unconstrained block and all active keys but the last.

    Returns ``(stay, bump)``, ``[B, full]`` polynomials in the number of draws: the sum over tie
    counts ``t`` of the product restricted to ``t`` ties, weighted ``1/(t+1)`` and ``1/(t+2)``."""
    es_count = rest_rows.shape[0]
    # DP over all active keys but the last, in excess coordinates; one element's polynomial has
    # degree <= rest + (n_active - 1) * (j - 1) there
    length = min(full, max(rests) + (n_active - 1) * (j - 1) + 1)
    state = np.zeros((es_count, n_active, length))
    state[:, 0] = rest_rows[:, :length]
    width = min(j, length)
    for i in range(n_active - 1):
        kernel = table[act[:, i], :width]  # x < j draws of this key
        tie = table[act[:, i], j, None]  # x == j draws: one more tie
        depth = i + 1  # tie rows 0..i are in use before this key
        low = _batched_truncated_conv(state[:, :depth], kernel)
        state[:, depth] = tie * state[:, depth - 1]
        state[:, 1:depth] = low[:, 1:] + tie[:, None] * state[:, : depth - 1]
        state[:, 0] = low[:, 0]
    # Back to draw counts (t ties add t*j draws) with the tie-break odds folded in: `stay` weights
    # t ties by 1/(t+1), `bump` by 1/(t+2) (the last key ties too).  The last key then needs one
    # convolution of a single row instead of one per tie count.
    stay = np.zeros((es_count, full))
    bump = np.zeros((es_count, full))
    for t in range(n_active):
        if t * j < full:
            span = min(length, full - t * j)
            stay[:, t * j : t * j + span] += state[:, t, :span] / (t + 1)
            bump[:, t * j : t * j + span] += state[:, t, :span] / (t + 2)
    return stay, bump


def _maj_numerators(profiles: Sequence[_Profile], kmax: int, n: int, s: int) -> np.ndarray:
    """Tilted ``P_p(|S| = k, correct key wins S)`` (ties weighted 1/(t+1)) for k = 0..kmax, per profile.

    ``S`` includes each candidate of the pool independently with probability ``p = n / 2^s``;
    dividing by ``P_p(|S| = k)`` gives maj@k.  See the module docstring for the generating
    polynomial.  Returns ``[len(profiles), kmax + 1]``.

    One *element* of work is a pair (problem, j) with ``1 <= j <= min(a, kmax)``.  For j above every
    other count the product is closed-form (one convolution per problem).  The other elements are
    batched across problems by (j, number of other keys that can reach j), so the number of array
    operations does not grow with the number of problems.  Inside a batch the tie count ``t`` is an
    array axis and each polynomial in ``z`` is kept in *excess* coordinates ``w = draws - t*j`` (a
    tied key always contributes exactly ``j`` draws), so adding a tie is an unshifted add; the last
    key is folded in after the tie-break weights ``1/(t+1)`` are applied (see :func:`_maj_state`)."""
    width_k = kmax + 1
    num = np.zeros((len(profiles), width_k))
    sizes: set[int] = set()
    # (n_active, j) -> lists of problem, unconstrained-block size, correct count, active counts
    groups: dict[tuple[int, int], tuple[list[int], list[int], list[int], list[tuple[int, ...]]]] = {}
    tails: list[tuple[int, int, int, int, int]] = []
    for e, (a, others, u) in enumerate(profiles):
        jmax = min(a, kmax)
        if jmax < 1:
            continue
        bmax = others[0] if others else 0
        rest_all = u + sum(others)
        sizes.update((a, rest_all))
        if jmax > bmax:  # j above every other count: the rest of the pool is unconstrained
            tails.append((e, a, bmax, jmax, rest_all))
        n_active, suffix = 0, rest_all
        for j in range(min(bmax, jmax), 0, -1):  # descending j: the active set {b_i >= j} only grows
            while n_active < len(others) and others[n_active] >= j:
                suffix -= others[n_active]
                sizes.add(others[n_active])
                n_active += 1
            # others[n_active:] (< j) can never reach j: they join the invalid answers, unconstrained
            sizes.add(suffix)
            g = groups.setdefault((n_active, j), ([], [], [], []))
            g[0].append(e)
            g[1].append(suffix)
            g[2].append(a)
            g[3].append(others[:n_active])
    if not sizes:
        return num
    # All tilted binomial rows needed, as one zero-padded table (row_b[j] is read for j <= kmax).
    order = sorted(sizes)
    where = {b: i for i, b in enumerate(order)}
    table = np.zeros((len(order), kmax + 2))
    for i, b in enumerate(order):
        row = _tilted_row(b, n, s)[: kmax + 2]
        table[i, : row.size] = row
    for e, a, bmax, jmax, rest_all in tails:
        head = np.zeros(jmax + 1)
        head[bmax + 1 :] = table[where[a], bmax + 1 : jmax + 1]
        num[e] += np.convolve(head, table[where[rest_all], :width_k])[:width_k]
    for (n_active, j), (es, rests, corrects, actives) in groups.items():
        full = width_k - j  # coefficients z^0..z^(kmax-j) are needed (the correct key adds z^j)
        act = np.array([[where[b] for b in t] for t in actives])  # [B, n_active], n_active >= 1
        rest_rows = table[[where[r] for r in rests], :full]
        if n_active == 1:  # only the last key: nothing to tie with yet
            stay, bump = rest_rows, 0.5 * rest_rows
        else:
            stay, bump = _maj_state(rest_rows, act, table, rests, n_active, j, full)
        last = act[:, -1]
        combined = _batched_truncated_conv(stay[:, None, :], table[last, : min(j, full)])[:, 0]
        if j < full:
            combined[:, j:] += table[last, j, None] * bump[:, : full - j]
        num[es, j:] += table[[where[a] for a in corrects], j, None] * combined
    return num


def _maj_curves(profiles: Sequence[_Profile], m: int, kk: np.ndarray) -> np.ndarray:
    """maj@k of pools of size ``m`` (given by their count profiles) at the budgets ``kk`` (in 1..m)."""
    out = np.zeros((len(profiles), kk.size))
    if not profiles or kk.size == 0:
        return out
    for n, s, band in _tilt_bands(m, kk):
        kmax = int(band.max())
        num = _maj_numerators(profiles, kmax, n, s)
        den = _tilted_row(m, n, s)[band]
        vals = np.clip(num[:, band] / den, 0.0, 1.0)
        pos = np.searchsorted(band, kk)
        hit = (pos < band.size) & (band[np.minimum(pos, band.size - 1)] == kk)
        out[:, hit] = vals[:, pos[hit]]
    return out


def majority_at_k(votes: Sequence[Hashable | None], correct: Hashable | None, k: int) -> float:
    """Exact expected accuracy of a plurality vote over a uniformly random ``k``-subset of ``votes``.

    The ``k`` answers are drawn without replacement from the pool ``votes`` (hashable answer keys;
    ``None`` = unparseable / invalid).  Invalid answers take slots but never win; a tie of the most
    frequent valid keys is broken uniformly at random (a tie of the correct key with ``t`` others
    scores ``1/(t+1)``); a draw with no valid answer scores 0.  With ``a`` correct answers::

        maj@k = sum_{j>=1} sum_t 1/(t+1) * #{k-subsets: j correct, t other keys with exactly j,
                                              none with more} / C(m, k)

    computed exactly by a generating-polynomial (multivariate hypergeometric) dynamic program, not
    by sampling.  ``correct`` absent from the pool (or ``None``) gives 0.  Raises ValueError for an
    empty pool or ``k`` outside ``1..m``.
    """
    a, others, u, m = _pool_counts(votes, correct)
    k = check_budget(k, m, "k")
    return float(_maj_curves([(a, others, u)], m, np.array([k], dtype=np.int64))[0, 0])


def majority_at_k_curves(
    votes_per_problem: Sequence[Sequence[Hashable | None]],
    correct_per_problem: Sequence[Hashable | None],
    ks: Iterable[int] | None = None,
) -> np.ndarray:
    """Exact maj@k (see :func:`majority_at_k`) for many problems and budgets at once.

    Returns ``[num_problems, len(ks)]``.  All budgets of one problem come from a single
    generating-polynomial pass (the polynomial's coefficient of ``z^k`` is budget ``k``), and
    problems with the same count profile (correct count, sorted other counts, invalid count) are
    computed once.  ``ks=None`` means every budget ``1..m`` (pools must then share ``m``); every
    budget must be in ``1..m`` of every pool.
    """
    pools = list(votes_per_problem)
    correct = list(correct_per_problem)
    if len(pools) != len(correct):
        raise ValueError(
            f"correct_per_problem has {len(correct)} entries but votes_per_problem has {len(pools)} pools"
        )
    profiles = [_pool_counts(v, c, "votes_per_problem") for v, c in zip(pools, correct, strict=True)]
    sizes = {prof[3] for prof in profiles}
    m_common = next(iter(sizes)) if len(sizes) == 1 else None
    kk = resolve_ks(ks, m_common, upper=min(sizes) if sizes else None)
    out = np.zeros((len(pools), kk.size))
    # one batched pass per pool size over the distinct count profiles
    by_size: dict[int, dict[_Profile, list[int]]] = {}
    for i, (a, others, u, m) in enumerate(profiles):
        if a:
            by_size.setdefault(m, {}).setdefault((a, others, u), []).append(i)
    for m, uniq in by_size.items():
        keys = list(uniq)
        vals = _maj_curves(keys, m, kk)
        for row, key in zip(vals, keys, strict=True):
            out[uniq[key]] = row
    return out
