"""The CAT objective library: one module per test-time strategy.

Each strategy turns the base policy's success probability p into the strategy's S(p); CAT trains
on -log S(p) (SFT) or weights the RL gradient by S'(p) (or p S'(p)/S(p)). Standard training is the
identity strategy, N = 1.
"""

from __future__ import annotations

from typing import Any

# Every strategy and estimator module registers itself on import (strategies/registry.py): one module per method.
from .base import Group, Strategy, laplace_success_rate, normalize_weights
from .best_of_n import BestOfN, RewardHistory, best_of_n_rl_weight, rank_quantiles
from .best_sample import best_sample_advantages
from .majority import (
    Majority,
    majority_rl_weight,
    majority_sft_loss,
    majority_sft_weight,
    majority_threshold,
    max_wrong_count,
)
from .majority_loo import loo_majority_advantages, vote_value
from .maxrl import maxrl_advantages, maxrl_objective
from .pass_at_n import (
    PassAtN,
    pass_at_n_rl_weight,
    pass_at_n_sft_loss,
    pass_at_n_sft_weight,
    pass_at_n_unbiased_weight,
)
from .passk_training import passk_training_advantages
from .pkpo import pkpo_advantages, pkpo_effective_rewards, pkpo_pass_at_k_rewards
from .registry import (
    EstimatorSpec,
    estimator_names,
    estimator_spec,
    register_estimator,
    register_strategy,
    strategy_class,
    strategy_names,
)
from .standard import Standard

STRATEGIES = strategy_names()  # ("standard", "pass_at_n", "majority", "best_of_n")


def build_strategy(cfg: Any) -> Strategy:
    """Build a Strategy from a strategy config (dataclass, DictConfig or dict) through the registry:
    strategy.name picks the class, strategy.estimator its RL estimator (strategies/registry.py)."""
    get = cfg.get if isinstance(cfg, dict) else lambda key, default=None: getattr(cfg, key, default)
    return strategy_class(get("name")).from_config(get)


__all__ = [
    "STRATEGIES", "BestOfN", "EstimatorSpec", "Group", "Majority", "PassAtN", "RewardHistory", "Standard", "Strategy",
    "best_of_n_rl_weight", "best_sample_advantages", "build_strategy", "estimator_names", "estimator_spec",
    "laplace_success_rate", "loo_majority_advantages", "majority_rl_weight", "majority_sft_loss",
    "majority_sft_weight", "majority_threshold", "max_wrong_count", "maxrl_advantages", "maxrl_objective",
    "normalize_weights", "pass_at_n_rl_weight", "pass_at_n_sft_loss", "pass_at_n_sft_weight",
    "pass_at_n_unbiased_weight", "passk_training_advantages", "pkpo_advantages", "pkpo_effective_rewards",
    "pkpo_pass_at_k_rewards", "rank_quantiles", "register_estimator", "register_strategy", "strategy_class",
    "strategy_names", "vote_value",
]
