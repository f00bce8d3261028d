"""What every strategy shares: the rollout group, weight normalisation, the Strategy interface."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Group:
    """The M rollouts of one prompt, as the RL trainer sees them after scoring.

    rewards: float [M]; correct: bool [M]; vote_keys: M answer keys (None = unparseable);
    seq_log_probs: float [M], the summed old-policy token log-probs of each completion, when known.
    """

    rewards: torch.Tensor
    correct: torch.Tensor
    vote_keys: Sequence[Hashable | None] | None = None
    seq_log_probs: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.rewards.numel())


def laplace_success_rate(c, m):
    """Laplace (add-one) estimate of a success probability: p_hat = (c + 1) / (m + 2).

    Never 0 or 1, so weights that vanish at the ends (Pass@N, majority) stay informative.
    """
    c = torch.as_tensor(c, dtype=torch.float64)
    return (c + 1.0) / (torch.as_tensor(m, dtype=torch.float64) + 2.0)


def normalize_weights(w: torch.Tensor, clip: float | None = None, mean_normalize: bool = False,
                      num_groups: int | None = None, per_sample: bool = False) -> torch.Tensor:
    """Clip, then optionally divide by the batch mean so that E[w] = 1 (method.md, RL update).

    w_clipped = min(w, clip); w_out = w_clipped / mean(w_clipped) over the whole logical batch.
    Per-prompt weights (one value for all of a prompt's rollouts: majority, Laplace Pass@N) in a
    batch of a single group (num_groups == 1) keep their raw (clipped) value, since dividing by
    their own mean would turn them into 1 and erase the CAT signal. Per-sample weights
    (`per_sample=True`: best-of-N, sequence-p and leave-one-out Pass@N) differ within a group, so
    they are normalised even then, as the authors do. All-zero weights stay zero (no 0/0).
    """
    w = torch.as_tensor(w)
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"weight clip must be > 0, got clip={clip}")
        w = torch.clamp(w, max=clip)
    if mean_normalize and (per_sample or num_groups is None or num_groups > 1) and w.numel() > 0:
        mean = w.mean()
        if mean > 0:
            w = w / mean
    return w


class Strategy:
    """A test-time strategy as a training objective (base class; see the subclasses).

    Subclasses define:
      sft_loss(log_p)      per-example CAT loss -log S(p), gradient -w * grad log p
      sft_weight(log_p)    the detached weight w = p S'(p) / S(p)
      group_weights(group) raw per-rollout RL weights for one prompt's rollouts
      aggregate(...)       the test-time outcome of a candidate set
    `rl_weights(groups)` applies clip and normalisation over the whole logical batch. A strategy with
    `replaces_advantages` gives the final per-rollout advantages itself, `rl_advantages(groups)`.
    """

    name: str = "base"
    n: int = 1
    # True when group_weights can differ between the rollouts of one prompt (see normalize_weights).
    per_sample_weights: bool = False
    # True when rl_advantages REPLACES the trainer's group-normalised advantage x CAT weight
    # (majority with estimator=loo); the trainer then uses rl_advantages and not rl_weights.
    replaces_advantages: bool = False

    def __init__(self, clip: float | None = None, mean_normalize: bool = False):
        self.clip = clip
        self.mean_normalize = mean_normalize

    # -- SFT -----------------------------------------------------------------------------
    def sft_loss(self, log_p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sft_weight(self, log_p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- RL --------------------------------------------------------------------------------
    def group_weights(self, group: Group) -> torch.Tensor:
        raise NotImplementedError

    def rl_weights(self, groups: Sequence[Group]) -> torch.Tensor:
        """Per-rollout weights for a batch of groups, concatenated in group order."""
        if not groups:
            return torch.zeros(0, dtype=torch.float64)
        raw = torch.cat([torch.as_tensor(self.group_weights(g), dtype=torch.float64).reshape(-1)
                         for g in groups])
        return normalize_weights(raw, self.clip, self.mean_normalize, num_groups=len(groups),
                                 per_sample=self.per_sample_weights)

    def rl_advantages(self, groups: Sequence[Group]) -> torch.Tensor:
        """Per-rollout advantages for a batch of groups, concatenated in group order (only where
        replaces_advantages is True)."""
        raise NotImplementedError(f"{self.describe()} weights the trainer's advantages; it has no own advantages")

    # -- test time ---------------------------------------------------------------------------
    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}(n={self.n})"
