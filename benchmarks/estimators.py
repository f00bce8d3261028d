"""Exact maj@k scaling curve vs the paper's 500-draw Monte Carlo, on synthetic MATH-like pools.

Run ``python benchmarks/estimators.py``.  500 problems x 128 samples (seeded): a few distinct answer
keys per problem with skewed (Zipf-like) frequencies, ~10% unparseable answers (``None``), the
correct key present in most problems.  Both estimators compute maj@k for every k = 1..128; the
Monte Carlo draws 500 random k-subsets per budget (as prefixes of 500 random permutations per
problem, fully vectorised with numpy, which is the fastest fair form of it).  The script reports the
wall time of each, their ratio, and the gap between the two *scaling curves* (mean over problems at
each k) relative to the Monte-Carlo standard error of that mean.  Times are the best of
``REPEATS`` alternating runs of each method in this one process.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cat_experiments.evaluation.estimators import (  # noqa: E402
    majority_at_k_curves,
    majority_at_k_monte_carlo_curves,
)

NUM_PROBLEMS = 500
POOL_SIZE = 128
DRAWS = 500
SEED = 0
REPEATS = 3


def synthetic_pools(
    num_problems: int = NUM_PROBLEMS, pool_size: int = POOL_SIZE, seed: int = SEED
) -> tuple[list[list[str | None]], list[str]]:
    """Seeded MATH-like pools: per problem 1-8 distinct answers with Zipf-like skew, ~10% invalid.

    The correct answer is the most popular key in about half the problems, a less popular key in
    about a third, and absent from the pool in the rest (~15%)."""
    rng = np.random.default_rng(seed)
    pools: list[list[str | None]] = []
    correct: list[str] = []
    for prob in range(num_problems):
        n_keys = int(rng.integers(1, 9))
        weights = 1.0 / np.arange(1, n_keys + 1) ** rng.uniform(0.5, 2.0)
        weights = rng.permutation(weights) if rng.random() < 0.3 else weights
        p_invalid = float(np.clip(rng.normal(0.10, 0.05), 0.0, 0.4))
        probs = np.append((1.0 - p_invalid) * weights / weights.sum(), p_invalid)
        draws = rng.choice(n_keys + 1, size=pool_size, p=probs)
        keys = [f"p{prob}_a{i}" for i in range(n_keys)]
        pools.append([None if d == n_keys else keys[d] for d in draws])
        r = rng.random()
        if r < 0.5:
            correct.append(keys[0])
        elif r < 0.85:
            correct.append(keys[int(rng.integers(n_keys))])
        else:
            correct.append(f"p{prob}_absent")
    return pools, correct


def run(
    num_problems: int = NUM_PROBLEMS,
    pool_size: int = POOL_SIZE,
    draws: int = DRAWS,
    seed: int = SEED,
    repeats: int = REPEATS,
) -> dict:
    pools, correct = synthetic_pools(num_problems, pool_size, seed)
    ks = np.arange(1, pool_size + 1)

    t_exact = t_mc = math.inf
    for _ in range(repeats):  # best of `repeats`, alternating the two methods
        t0 = time.perf_counter()
        exact = majority_at_k_curves(pools, correct, ks)
        t_exact = min(t_exact, time.perf_counter() - t0)

        t0 = time.perf_counter()
        mc, se = majority_at_k_monte_carlo_curves(
            pools, correct, ks, draws=draws, rng=seed + 1, return_se=True
        )
        t_mc = min(t_mc, time.perf_counter() - t0)

    curve_exact = exact.mean(axis=0)
    curve_mc = mc.mean(axis=0)
    curve_se = np.sqrt((se**2).sum(axis=0)) / num_problems  # problems are independent
    gap = np.abs(curve_mc - curve_exact)
    k_gap = int(np.argmax(gap))
    has_se = curve_se > 0
    z = np.where(has_se, gap / np.where(has_se, curve_se, 1.0), 0.0)
    k_z = int(np.argmax(z))
    return {
        "t_exact": t_exact,
        "t_mc": t_mc,
        "max_gap": float(gap[k_gap]),
        "k_max_gap": int(ks[k_gap]),
        "se_at_max_gap": float(curve_se[k_gap]),
        "max_z": float(z[k_z]),
        "k_max_z": int(ks[k_z]),
        "max_gap_no_se": float(gap[~has_se].max()) if (~has_se).any() else 0.0,
        "max_problem_gap": float(np.abs(mc - exact).max()),
        "curve_exact": curve_exact,
    }


def main() -> None:
    res = run()
    print(f"maj@k for every k = 1..{POOL_SIZE}, {NUM_PROBLEMS} problems x {POOL_SIZE} samples (seed {SEED})")
    print()
    print(f"| method | seconds (best of {REPEATS}) |")
    print("|---|---|")
    print(f"| exact (majority_at_k_curves) | {res['t_exact']:.3f} |")
    print(f"| Monte Carlo, {DRAWS} draws per k (vectorised) | {res['t_mc']:.3f} |")
    print(f"| ratio MC / exact | {res['t_mc'] / res['t_exact']:.1f}x |")
    print()
    print(
        f"largest |MC - exact| of the scaling curve (mean over {NUM_PROBLEMS} problems): "
        f"{res['max_gap']:.2e} at k={res['k_max_gap']} (MC standard error there {res['se_at_max_gap']:.2e})"
    )
    print(f"max over k of |gap| / SE: {res['max_z']:.2f} (at k={res['k_max_z']})")
    print(f"largest single-problem |MC - exact|: {res['max_problem_gap']:.3f}")
    ce = res["curve_exact"]
    print(
        "exact curve: " + ", ".join(f"maj@{k}={ce[k - 1]:.4f}" for k in (1, 4, 16, 64, 128) if k <= ce.size)
    )


if __name__ == "__main__":
    main()
