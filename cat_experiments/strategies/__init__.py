"""The CAT objective library: one module per test-time strategy.

Each strategy turns the base policy's success probability p into the strategy's S(p); CAT trains
on -log S(p) (SFT) or weights the RL gradient by S'(p) (or p S'(p)/S(p)). Standard training is the
identity strategy, N = 1.
"""

from __future__ import annotations

from typing import Any

from .base import Group, Strategy, laplace_success_rate, normalize_weights
from .best_of_n import BestOfN, RewardHistory, best_of_n_rl_weight, rank_quantiles
from .majority import (
    Majority,
    majority_rl_weight,
    majority_sft_loss,
    majority_sft_weight,
    majority_threshold,
    max_wrong_count,
)
from .majority_loo import loo_majority_advantages, vote_value
from .pass_at_n import (
    PassAtN,
    pass_at_n_rl_weight,
    pass_at_n_sft_loss,
    pass_at_n_sft_weight,
    pass_at_n_unbiased_weight,
)
from .standard import Standard

STRATEGIES = ("standard", "pass_at_n", "majority", "best_of_n")


def build_strategy(cfg: Any) -> Strategy:
    """Build a Strategy from a strategy config (dataclass, DictConfig or dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda key, default=None: getattr(cfg, key, default)
    name = get("name")
    common = {"clip": get("clip"), "mean_normalize": bool(get("mean_normalize", False))}
    if name == "standard":
        return Standard(**common)
    if name == "pass_at_n":
        return PassAtN(n=get("n"), weight_form=get("weight_form", "log"),
                       p_estimator=get("p_estimator", "sequence"), **common)
    if name == "majority":
        return Majority(n=get("n"), k=get("k"), weight_form=get("weight_form", "raw"),
                        estimator=get("estimator", "surrogate") or "surrogate", **common)
    if name == "best_of_n":
        return BestOfN(n=get("n"), q_estimator=get("q_estimator", "group"),
                       history_size=get("history_size", 4000), **common)
    raise ValueError(f"unknown strategy.name={name!r}; choose one of {', '.join(STRATEGIES)}")


__all__ = [
    "STRATEGIES", "BestOfN", "Group", "Majority", "PassAtN", "RewardHistory", "Standard", "Strategy",
    "best_of_n_rl_weight", "build_strategy", "laplace_success_rate", "loo_majority_advantages", "majority_rl_weight",
    "majority_sft_loss", "majority_sft_weight", "majority_threshold", "max_wrong_count",
    "normalize_weights", "pass_at_n_rl_weight", "pass_at_n_sft_loss", "pass_at_n_sft_weight",
    "pass_at_n_unbiased_weight", "rank_quantiles", "vote_value",
]
