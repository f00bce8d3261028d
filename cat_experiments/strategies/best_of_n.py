"""Best-of-N under a reward: the strategy keeps the highest-reward of N samples.

A sample y wins when all N - 1 rivals score lower: P = q^(N-1) with q = P[R(Y') < R(y)], so the
RL weight is N q^(N-1) (winner takes all). For SFT it is the Pass@N loss on the best known target.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

import torch

from ._numerics import as_float64, mul_log
from .base import Group, Strategy
from .pass_at_n import check_n, pass_at_n_sft_loss, pass_at_n_sft_weight


def best_of_n_rl_weight(q, n: int) -> torch.Tensor:
    """w = N q^(N-1), q in [0, 1] the sample's reward quantile among rivals (detached, float64)."""
    n = check_n(n)
    q = as_float64(q).detach()
    if torch.any((q < 0) | (q > 1)) or torch.any(torch.isnan(q)):
        raise ValueError("quantile q must lie in [0, 1]")
    return n * torch.exp(mul_log(n - 1, torch.log(q)))


def rank_quantiles(rewards) -> torch.Tensor:
    """Within-group quantiles q_i = (#{j: r_j < r_i} + 1) / (M + 1); ties share q.

    Strictly-lower ranks, so a group of equal rewards gets q = 1/(M+1) for all. Never rank
    across prompts: a prompt's rewards are only comparable with each other.
    """
    r = as_float64(rewards).reshape(-1)
    lower = (r.unsqueeze(0) < r.unsqueeze(1)).sum(dim=1).to(torch.float64)
    return (lower + 1.0) / (r.numel() + 1.0)


class RewardHistory:
    """FIFO of recent rewards for unconditional tasks (one prompt, so no group to rank within).

    quantiles(batch) is queried BEFORE the batch is appended:
        q = (#{h in H: h < r} + 1) / (|H| + 2), clamped to [0.001, 0.999].
    """

    def __init__(self, capacity: int = 4000):
        if capacity < 1:
            raise ValueError(f"reward history capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._h: deque[float] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._h)

    def quantiles(self, rewards) -> torch.Tensor:
        r = as_float64(rewards).reshape(-1)
        h = torch.tensor(list(self._h), dtype=torch.float64)
        lower = (h.unsqueeze(0) < r.unsqueeze(1)).sum(dim=1).to(torch.float64)
        return ((lower + 1.0) / (len(self._h) + 2.0)).clamp(0.001, 0.999)

    def extend(self, rewards) -> None:
        self._h.extend(float(x) for x in as_float64(rewards).reshape(-1).tolist())

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "rewards": list(self._h)}

    def load_state_dict(self, state: dict) -> None:
        self._h = deque(state["rewards"], maxlen=state["capacity"])
        self.capacity = state["capacity"]


class BestOfN(Strategy):
    """Best-of-N. q_estimator: "group" (within-prompt rank, conditional tasks) or "history"
    (FIFO of recent rewards, unconditional tasks)."""

    name = "best_of_n"
    per_sample_weights = True

    def __init__(self, n: int, q_estimator: str = "group", history_size: int = 4000,
                 clip: float | None = None, mean_normalize: bool = False):
        super().__init__(clip=clip, mean_normalize=mean_normalize)
        self.n = check_n(n)
        if q_estimator not in ("group", "history"):
            raise ValueError(f"strategy.q_estimator must be 'group' or 'history', got {q_estimator!r}")
        self.q_estimator = q_estimator
        self.history = RewardHistory(history_size) if q_estimator == "history" else None

    def sft_loss(self, log_p):
        return pass_at_n_sft_loss(log_p, self.n)

    def sft_weight(self, log_p):
        return pass_at_n_sft_weight(log_p, self.n)

    def group_weights(self, group: Group) -> torch.Tensor:
        if self.history is None:
            q = rank_quantiles(group.rewards)
        else:
            q = self.history.quantiles(group.rewards)
        return best_of_n_rl_weight(q, self.n)

    def rl_weights(self, groups: Sequence[Group]) -> torch.Tensor:
        w = super().rl_weights(groups)
        if self.history is not None:  # the whole batch is queried before any of it is appended
            for g in groups:
                self.history.extend(g.rewards)
        return w

    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        """The best candidate's reward."""
        if rewards is None or len(rewards) == 0:
            raise ValueError("best-of-N aggregation needs rewards")
        return float(max(rewards))
