"""MaxRL: Maximum Likelihood Reinforcement Learning (Tajwar et al., arXiv 2602.02710, Feb 2026), as
``strategy=pass_at_n strategy.estimator=maxrl`` (with the paper's mean baseline) or ``maxrl_no_baseline``.

The target is the likelihood of success, log p = -sum_{j>=1} (1-p)^j / j, truncated at the number of samples:

    J_n(p) = -sum_{j=1..n} (1-p)^j / j,   grad J_n = grad p * (1 - (1-p)^n) / p = sum_{j<=n} grad pass@j / j.

n = 1 is REINFORCE's target p (up to a constant); n -> infinity is maximum likelihood. With n rollouts and
K of them correct, the paper's estimator averages grad log pi over the successes,

    g = (1/K) sum_{i correct} grad log pi(y_i)    (0 when K = 0),   E[g] = grad J_n exactly,

so a success gets advantage n/K ("successes weighted by 1/#successes"; in TRL's mean over n completions), a
failure 0. With the paper's mean baseline the advantage is (r_i - mean r) / mean r: n/K - 1 for a success,
-1 for a failure, and 0 for every rollout of a group with K = 0 (our reading of the paper; it is TRL's MaxRL
"p-normalisation" too). Because the baseline is dropped exactly when K = 0, it is not free: its expectation is
-grad p (1-p)^(n-1) = grad[(1-p)^n / n], so the mean-baseline estimator is EXACTLY unbiased for
grad J_(n-1) (the j = n term drops out); tests/test_methods.py checks both identities by enumeration.

Rollouts M >= n = strategy.n (ours, as for the other subset estimators): the estimator is averaged over all
C(M, n) n-subsets of the group, which keeps it unbiased and lowers its variance. A success then gets
T = n E[1 / (1 + J)], J ~ Hypergeometric(the other n-1 members of a subset drawn from the other M-1 rollouts,
c-1 of them correct), and a failure in the baseline form -(1 - C(M-1-c, n-1)/C(M-1, n-1)) (the share of its
subsets with a success). At M = n these are the paper's n/K and -1. Scale: (1/M) sum_i A_i grad log pi(y_i)
has expectation grad J_n (no baseline) or grad J_(n-1) (mean baseline).
"""

from __future__ import annotations

import torch

from ._numerics import as_float64
from .base import Group
from .pkpo import comb
from .registry import register_estimator


def maxrl_objective(p, n: int) -> torch.Tensor:
    """J_n(p) = -sum_{j=1..n} (1-p)^j / j, differentiable in p."""
    p = torch.as_tensor(p)
    return -sum((1 - p) ** j / j for j in range(1, n + 1))


def maxrl_advantages(correct, n: int, baseline: bool = True) -> torch.Tensor:
    """Per-rollout MaxRL advantages of one group (float64 [M]); see the module docstring."""
    r = as_float64(correct).reshape(-1)
    m, c = r.numel(), int(r.sum().item())
    if int(n) != n or not 1 <= n <= m:
        raise ValueError(f"MaxRL needs 1 <= n <= M rollouts, got n={n}, M={m}")
    if baseline and n < 2:
        raise ValueError("MaxRL's mean baseline needs n >= 2 (at n = 1 it cancels every advantage)")
    if c == 0:
        return torch.zeros(m, dtype=torch.float64)
    total = comb(m - 1, n - 1)
    # T = n E[1/(1+J)], J = correct among the other n-1 members of a subset containing a success
    success = n * sum(comb(c - 1, j) * comb(m - c, n - 1 - j) / total / (1 + j) for j in range(n))
    if not baseline:
        return torch.where(r > 0, torch.full_like(r, success), torch.zeros_like(r))
    failure = -(1.0 - comb(m - 1 - c, n - 1) / total)  # minus the share of a failure's subsets with a success
    return torch.where(r > 0, torch.full_like(r, success - 1.0), torch.full_like(r, failure))


_PAPER = "Tajwar et al. 2026, arXiv 2602.02710"


@register_estimator("maxrl", ("pass_at_n",), min_k=2, paper=_PAPER,
                    target="J_(n-1) = -sum_{j<n} (1-p)^j/j, the truncated log-likelihood (mean baseline)")
def maxrl_estimator(group: Group, k: int) -> torch.Tensor:
    return maxrl_advantages(torch.as_tensor(group.correct), k, baseline=True)


@register_estimator("maxrl_no_baseline", ("pass_at_n",), paper=_PAPER,
                    target="J_n = -sum_{j<=n} (1-p)^j/j, the truncated log-likelihood")
def maxrl_no_baseline_estimator(group: Group, k: int) -> torch.Tensor:
    return maxrl_advantages(torch.as_tensor(group.correct), k, baseline=False)
