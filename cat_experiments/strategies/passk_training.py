"""Pass@k Training's analytic advantage (Chen, Qin, Wu, Ling, Ye, Zhao & Shi, arXiv 2508.10751), as
``strategy=pass_at_n strategy.estimator=passk_training`` with k = strategy.n.

The paper first trains on pass@k rewards of k-subsets of the group ("full sampling"), GRPO-normalised over the
subsets, then derives the expectation over all C(n, k) subsets in closed form. For a group of n rollouts with c
correct (the authors' code, RUCAIBox/Passk_Training, calc_adv):

    R     = 1 - C(n-c, k) / C(n, k)                  the mean pass@k reward of a k-subset
    sigma = sqrt(R (1 - R))                           its (population) std
    A_pos = (1 - R) / (sigma + 1e-6)                                      a correct rollout
    A_neg = (1 - R - C(n-c-1, k-1) / C(n-1, k-1)) / (sigma + 1e-6)        a wrong rollout

i.e. A_i = (mean reward of the k-subsets containing i - R) / sigma: the average over those subsets of the
GRPO advantage of the subset. A group with R in {0, 1} gets 0. k = 1 is GRPO with the population std
(A = (r - c/n) / sqrt(c/n (1 - c/n))). Not an unbiased gradient of pass@k (the baseline R and the std depend
on the rollout itself); it is the paper's advantage, as written.
"""

from __future__ import annotations

import math

import torch

from ._numerics import as_float64
from .base import Group
from .pkpo import comb
from .registry import register_estimator

EPS = 1e-6  # the authors' code: sigma + 1e-6


def passk_training_advantages(correct, k: int) -> torch.Tensor:
    """Chen et al.'s analytic Pass@k-Training advantages of one group, float64 [n]."""
    r = as_float64(correct).reshape(-1)
    n, c = r.numel(), int(r.sum().item())
    if int(k) != k or not 1 <= k <= n:
        raise ValueError(f"Pass@k Training needs 1 <= k <= n rollouts, got k={k}, n={n}")
    mean = 1.0 - comb(n - c, k) / comb(n, k)
    sigma = math.sqrt(max(mean * (1.0 - mean), 0.0))
    pos = (1.0 - mean) / (sigma + EPS)
    neg = (1.0 - mean - comb(n - c - 1, k - 1) / comb(n - 1, k - 1)) / (sigma + EPS)
    return torch.where(r > 0, torch.full_like(r, pos), torch.full_like(r, neg))


@register_estimator("passk_training", ("pass_at_n",), k_below_rollouts=True,
                    paper="Chen et al. 2025, arXiv 2508.10751 (analytic advantage)",
                    target="pass@k, k = strategy.n (GRPO-normalised over k-subsets; not unbiased)")
def passk_training_estimator(group: Group, k: int) -> torch.Tensor:
    return passk_training_advantages(torch.as_tensor(group.correct), k)
