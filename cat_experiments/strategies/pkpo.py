"""PKPO: Pass-at-k Policy Optimization (Walder & Karkhanis, NeurIPS 2025, arXiv 2505.15201), as
``strategy.estimator=pkpo``: pass@k for binary rewards (strategy=pass_at_n) and max@k for continuous rewards
(strategy=best_of_n), for any k = strategy.n <= M rollouts of a prompt, with an optional k schedule.

The paper averages over all C(n, k) k-subsets I of a prompt's n rollouts (here n = M). Its unbiased
estimates of the targets, rewards sorted ascending g_(1) <= ... <= g_(n):

    pass@k:  rho(n, c, k) = 1 - C(n-c, k) / C(n, k)                       (c correct of n)
    max@k:   rho_g(n, k)  = 1/C(n,k) * sum_i C(i-1, k-1) g_(i)

and of their gradients, sum_i s_i grad log pi(y_i) with the effective rewards

    s_i = 1/C(n,k) * sum_{I : i in I} max_{j in I} g_j
        = 1/C(n,k) * [ C(i-1, k-1) g_(i) + sum_{j > i} C(j-2, k-2) g_(j) ]       (i = the sorted position)

which for binary rewards is k/n for a correct rollout and (k/n) rho(n-1, c, k-1) for a wrong one.
E[sum_i s_i grad log pi(y_i)] = grad pass@k (max@k) exactly.

Baseline: the paper's variance-reduced "s^(loo-1)" (its Eq. 33, the variant it finds lowest in variance and
recommends): every subset's own leave-one-out baseline, the max of its other k-1 members,

    s_i^(loo-1) = 1/C(n,k) * sum_{I : i in I} [ max_{j in I} g_j - max_{j in I, j != i} g_j ],

i.e. 1/C(n,k) * sum_{m < i} C(m-1, k-2) (g_(i) - g_(m)) (only subsets whose max is i count). It needs k >= 2
(a subset of one has no others). For binary rewards it is zero for a wrong rollout and
(k/n) C(n-c, k-1) / C(n-1, k-1) for a correct one (n/N times CAT's unbiased Pass@N weight, strategies/
pass_at_n.py, at N = k). At k = n it is Tang et al.'s k = n estimator (strategies/best_sample.py).
Ours: at k = 1 the baseline is the mean of the other rewards (RLOO), s_i = (g_i - mean_{j != i} g_j) / n,
Dr. GRPO's mean-centred advantage without the std, times n/(n-1).

Scale (ours): the advantage is A_i = M s_i^(loo-1), so that TRL's mean over completions, (1/M) sum_i A_i
grad log pi(y_i), is exactly grad pass@k (max@k) for each prompt.

k schedule (paper: "annealing k"): strategy.k_schedule = [k_start, k_end] moves k linearly over the run's
optimizer steps (Strategy.current_k), from the trainer's global step.
"""

from __future__ import annotations

import math

import torch

from ._numerics import as_float64
from .base import Group
from .registry import register_estimator


def comb(n: int, k: int) -> int:
    """C(n, k), 0 outside 0 <= k <= n (also for n < 0)."""
    return math.comb(n, k) if 0 <= k <= n else 0


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """rho(n, c, k) = 1 - C(n-c, k) / C(n, k): the unbiased pass@k of c correct among n (k <= n)."""
    if not 0 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"need 0 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def max_at_k_estimate(rewards, k: int) -> float:
    """rho_g(n, k) = 1/C(n,k) sum_i C(i-1, k-1) g_(i), rewards sorted ascending: the unbiased max@k."""
    g = sorted(as_float64(rewards).reshape(-1).tolist())
    n = len(g)
    _check(n, k)
    total = comb(n, k)
    return sum(comb(i - 1, k - 1) / total * g[i - 1] for i in range(1, n + 1))


def _check(n: int, k: int) -> None:
    if int(k) != k or not 1 <= k <= n:
        raise ValueError(f"PKPO needs 1 <= k <= n rollouts, got k={k}, n={n}")


def _sorted(rewards) -> tuple[list[float], list[int]]:
    g = as_float64(rewards).reshape(-1)
    order = torch.argsort(g, stable=True).tolist()
    return [float(g[i]) for i in order], order


def pkpo_effective_rewards(rewards, k: int) -> torch.Tensor:
    """The paper's s_i (no baseline), float64 [n]: E[sum_i s_i grad log pi(y_i)] = grad max@k (pass@k for 0/1)."""
    g, order = _sorted(rewards)
    n = len(g)
    _check(n, k)
    total = comb(n, k)
    s_sorted = [0.0] * n
    tail = 0.0  # sum_{j > i} C(j-2, k-2) g_(j) / C(n, k)
    for i in range(n, 0, -1):
        s_sorted[i - 1] = comb(i - 1, k - 1) / total * g[i - 1] + tail
        tail += comb(i - 2, k - 2) / total * g[i - 1]
    out = torch.zeros(n, dtype=torch.float64)
    out[order] = torch.tensor(s_sorted, dtype=torch.float64)
    return out


def pkpo_pass_at_k_rewards(correct, k: int) -> torch.Tensor:
    """Binary effective rewards before the baseline (the paper's closed form): k/n for a correct rollout,
    (k/n) rho(n-1, c, k-1) for a wrong one. Equals pkpo_effective_rewards on 0/1 rewards."""
    r = as_float64(correct).reshape(-1)
    n, c = r.numel(), int(r.sum().item())
    _check(n, k)
    wrong = k / n * pass_at_k_estimate(n - 1, c, k - 1) if c < n else 0.0
    return torch.where(r > 0, torch.full_like(r, k / n), torch.full_like(r, wrong))


def pkpo_loo_minus_one(rewards, k: int) -> torch.Tensor:
    """s_i^(loo-1) = 1/C(n,k) sum_{I containing i} [max_I g - max_{I minus i} g], float64 [n], k >= 2.

    Only subsets where rollout i is the maximum contribute, so with g sorted ascending (i its position)
    s_i^(loo-1) = 1/C(n,k) sum_{m < i} C(m-1, k-2) (g_(i) - g_(m)): a sum of non-negative terms, exactly 0 for a
    rollout tied with every lower one (a wrong rollout under 0/1 rewards), with no cancellation error.
    """
    g, order = _sorted(rewards)
    n = len(g)
    _check(n, k)
    if k < 2:
        raise ValueError("s^(loo-1) needs k >= 2 (the baseline is the max of the subset's other k-1 rewards)")
    total = comb(n, k)
    w = [comb(m - 1, k - 2) / total for m in range(1, n + 1)]  # w[m-1] for sorted position m
    vals = [sum(w[m] * (g[i] - g[m]) for m in range(i)) for i in range(n)]
    out = torch.zeros(n, dtype=torch.float64)
    out[order] = torch.tensor(vals, dtype=torch.float64)
    return out


def pkpo_advantages(rewards, k: int) -> torch.Tensor:
    """A_i = M s_i^(loo-1) (k >= 2), or g_i - mean_{j != i} g_j (k = 1; RLOO), float64 [M]:
    (1/M) E[sum_i A_i grad log pi(y_i)] = grad max@k (pass@k for 0/1 rewards)."""
    g = as_float64(rewards).reshape(-1)
    m = g.numel()
    _check(m, k)
    if k == 1:
        if m < 2:
            raise ValueError("PKPO at k = 1 takes the mean of the other rollouts as baseline: needs M >= 2")
        return g - (g.sum() - g) / (m - 1)
    return m * pkpo_loo_minus_one(g, k)


def _correct(group: Group) -> torch.Tensor:
    return torch.as_tensor(group.correct).reshape(-1).to(torch.float64)


_PAPER = "Walder & Karkhanis, NeurIPS 2025, arXiv 2505.15201 (s^(loo-1))"


@register_estimator("pkpo", ("pass_at_n",), target="pass@k, k = strategy.n (or strategy.k_schedule)",
                    k_schedule=True, paper=_PAPER)
def pkpo_pass_at_k_estimator(group: Group, k: int) -> torch.Tensor:
    """strategy=pass_at_n strategy.estimator=pkpo: pkpo_advantages on the rollouts' correctness (0/1)."""
    return pkpo_advantages(_correct(group), k)


@register_estimator("pkpo", ("best_of_n",), target="max@k: the expected best reward of k = strategy.n samples",
                    k_schedule=True, paper=_PAPER)
def pkpo_max_at_k_estimator(group: Group, k: int) -> torch.Tensor:
    """strategy=best_of_n strategy.estimator=pkpo: pkpo_advantages on the rollouts' rewards."""
    return pkpo_advantages(group.rewards, k)
