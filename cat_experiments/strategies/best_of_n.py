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
from .registry import register_strategy


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


@register_strategy("best_of_n", order=3)
class BestOfN(Strategy):
    """Best-of-N. q_estimator: "group" (within-prompt rank, conditional tasks) or "history"
    (FIFO of recent rewards, unconditional tasks). strategy.estimator=pkpo (max@k) or best_sample replaces
    the weighted advantage (docs/method.md); q_estimator is then unused and no history is kept."""

    per_sample_weights = True
    target_metric = "max@k"

    def __init__(self, n: int, q_estimator: str = "group", history_size: int = 4000,
                 clip: float | None = None, mean_normalize: bool = False, estimator: str | None = None,
                 k_schedule: Sequence[int] | None = None):
        self.n = check_n(n)
        super().__init__(clip=clip, mean_normalize=mean_normalize, estimator=estimator, k_schedule=k_schedule)
        if q_estimator not in ("group", "history"):
            raise ValueError(f"strategy.q_estimator must be 'group' or 'history', got {q_estimator!r}")
        self.q_estimator = q_estimator
        keeps_history = q_estimator == "history" and not self.replaces_advantages
        self.history = RewardHistory(history_size) if keeps_history else None

    @classmethod
    def from_config(cls, get) -> BestOfN:
        return cls(n=get("n"), q_estimator=get("q_estimator", "group"), history_size=get("history_size", 4000),
                   clip=get("clip"), mean_normalize=bool(get("mean_normalize", False)),
                   estimator=get("estimator", None), k_schedule=get("k_schedule", None))

    def state_dict(self) -> dict:
        """The reward history (q_estimator=history), so a resumed run ranks against the same rewards."""
        return {} if self.history is None else {"history": self.history.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.history is not None and "history" in state:
            self.history.load_state_dict(state["history"])

    def sft_loss(self, log_p):
        self._check_sft()
        return pass_at_n_sft_loss(log_p, self.n)

    def sft_weight(self, log_p):
        self._check_sft()
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
