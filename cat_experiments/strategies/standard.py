"""The identity strategy (N = 1): standard SFT (cross-entropy) and standard RL.

Every CAT formula reduces to it at N = 1; keeping it a Strategy means the trainers have one code path.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from .base import Group, Strategy
from .registry import register_strategy


@register_strategy("standard", order=0)
class Standard(Strategy):
    """loss = -log p, weight = 1, test time = one sample. RL: stock TRL GRPO (is_identity)."""

    n = 1
    is_identity = True

    @classmethod
    def from_config(cls, get) -> Standard:
        return cls(clip=get("clip"), mean_normalize=bool(get("mean_normalize", False)),
                   estimator=get("estimator", None), k_schedule=get("k_schedule", None))

    def sft_loss(self, log_p: torch.Tensor) -> torch.Tensor:
        return -log_p

    def sft_weight(self, log_p: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(torch.as_tensor(log_p, dtype=torch.float64))

    def group_weights(self, group: Group) -> torch.Tensor:
        return torch.ones(len(group), dtype=torch.float64)

    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        """A single sample: the first candidate decides."""
        return float(bool(correct[0])) if len(correct) else 0.0
