"""Best-sample: the k = n leave-one-out estimator of Tang, Zheng, Synnaeve & Munos (ICML 2025,
arXiv 2503.19595) for pass@n / max@n, as verl's ``grpo_passk`` computes it; ``strategy.estimator=best_sample``
for strategy=pass_at_n (0/1 correctness) and strategy=best_of_n (rewards).

The paper's gradient of E[f(y_1..y_n)] with the leave-one-out control variate f(y_-i) (independent of y_i),
for f = max:

    grad E[max_j g(y_j)] = E[ sum_i (max_j g_j - max_{j != i} g_j) grad log pi(y_i) ],

so only the best rollout of a group moves, by g_max - g_2nd (verl: "only the best response per group gets a
non-zero advantage: r_max - r_second_max"), and a tie at the top gives no signal at all. verl also divides it
by the group's reward std by default (norm_adv_by_std_in_grpo); we do not, which keeps the estimator unbiased.
A group of M > n = strategy.n rollouts (ours, as majority's loo): the average over the n-subsets that contain
rollout i, A_i = 1/C(M-1, n-1) sum_{S : i in S, |S| = n} [max_S g - max_{S minus i} g], so that
(n/M) E[sum_i A_i grad log pi(y_i)] = grad max@n (pass@n for 0/1). This equals PKPO's s^(loo-1) times M/n
(strategies/pkpo.py): the same direction as pkpo at k = n, a step n times smaller. Needs n >= 2.
"""

from __future__ import annotations

import torch

from ._numerics import as_float64
from .base import Group
from .pkpo import pkpo_loo_minus_one
from .registry import register_estimator


def best_sample_advantages(rewards, n: int) -> torch.Tensor:
    """A_i = 1/C(M-1, n-1) sum_{n-subsets S containing i} [max_S g - max_{S minus i} g], float64 [M]; at M = n the
    top rollout gets g_max - g_2nd and every other rollout 0."""
    g = as_float64(rewards).reshape(-1)
    m = g.numel()
    if int(n) != n or not 2 <= n <= m:
        raise ValueError(f"best-sample needs 2 <= n <= M rollouts, got n={n}, M={m}")
    return pkpo_loo_minus_one(g, int(n)) * (m / n)


_PAPER = "Tang et al. ICML 2025, arXiv 2503.19595 (k = n); verl grpo_passk without its std division"


@register_estimator("best_sample", ("pass_at_n",), min_k=2, paper=_PAPER,
                    target="pass@k, k = strategy.n (step grad pass@k / k)")
def best_sample_pass_estimator(group: Group, k: int) -> torch.Tensor:
    return best_sample_advantages(torch.as_tensor(group.correct).to(torch.float64), k)


@register_estimator("best_sample", ("best_of_n",), min_k=2, paper=_PAPER,
                    target="max@k, k = strategy.n (step grad max@k / k)")
def best_sample_max_estimator(group: Group, k: int) -> torch.Tensor:
    return best_sample_advantages(group.rewards, k)
