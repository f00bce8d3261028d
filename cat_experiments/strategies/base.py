"""What every strategy shares: the rollout group, weight normalisation, the Strategy interface."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from .registry import SURROGATE, estimator_spec


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
    `rl_weights(groups)` applies clip and normalisation over the whole logical batch.

    What the trainer asks of a strategy (declared here, never found out by isinstance):
      replaces_advantages       strategy.estimator is not the surrogate: `rl_advantages(groups)` gives the final
                                per-rollout advantages (the registered estimator, strategies/registry.py)
      needs_sequence_log_probs  group weights read the rollouts' summed old-policy log-probs
      is_identity               standard training: the trainer leaves stock TRL's advantages untouched
      target_metric             the evaluation curve the method aims at, at budget n ("pass@k", "maj@k",
                                "max@k"; None = the task's own metric at N = 1)
      state_dict / load_state_dict  per-run state a resumed run must restore (best-of-N reward history)
      set_progress(step, max_steps) the trainer's global step, for estimators whose k follows a schedule
    """

    name: str = "base"  # set by @register_strategy
    n: int = 1
    # True when group_weights can differ between the rollouts of one prompt (see normalize_weights).
    per_sample_weights: bool = False
    is_identity: bool = False
    target_metric: str | None = None

    def __init__(self, clip: float | None = None, mean_normalize: bool = False, estimator: str | None = None,
                 k_schedule: Sequence[int] | None = None):
        self.clip = clip
        self.mean_normalize = mean_normalize
        self.estimator = estimator or SURROGATE
        self.estimator_spec = estimator_spec(self.name, self.estimator)  # ValueError naming strategy.estimator
        spec = self.estimator_spec
        ks = [self.n] if k_schedule is None else list(k_schedule)
        if k_schedule is not None:
            if not spec.k_schedule:
                raise ValueError(f"strategy.k_schedule is for estimators with a k schedule (pkpo), not "
                                 f"strategy.estimator={self.estimator}")
            if len(ks) != 2 or any(int(k) != k for k in ks):
                raise ValueError(f"strategy.k_schedule must be [k_start, k_end] (integers), got {list(k_schedule)}")
            ks = [int(k) for k in ks]
        if spec.replaces_advantages and min(ks) < spec.min_k:
            raise ValueError(f"strategy.estimator={self.estimator} needs k = strategy.n >= {spec.min_k}, got {min(ks)}")
        self.k_schedule = None if k_schedule is None else tuple(ks)
        self._step, self._max_steps = 0, 0

    @property
    def replaces_advantages(self) -> bool:
        """True when rl_advantages REPLACES the trainer's group-normalised advantage x CAT weight."""
        return self.estimator_spec.replaces_advantages

    @property
    def needs_sequence_log_probs(self) -> bool:
        return False

    # -- per-run state and progress ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Per-run state a resumed run restores (JSON-serialisable); {} = none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore state_dict()'s output."""

    def set_progress(self, step: int, max_steps: int | None) -> None:
        """The trainer's global step and planned steps (for strategy.k_schedule)."""
        self._step, self._max_steps = int(step), int(max_steps or 0)

    def current_k(self) -> int:
        """k of the estimator at this step: strategy.n, or strategy.k_schedule = [k_start, k_end] annealed
        linearly over the run, k(t) = round(k_start + (k_end - k_start) t), t = step / (max_steps - 1) in [0, 1]
        (half rounds up; t = 0 while the planned steps are unknown)."""
        if self.k_schedule is None:
            return self.n
        start, end = self.k_schedule
        t = 0.0 if self._max_steps <= 1 else min(1.0, max(0.0, self._step / (self._max_steps - 1)))
        return int(math.floor(start + (end - start) * t + 0.5))

    # -- SFT -----------------------------------------------------------------------------
    def sft_loss(self, log_p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sft_weight(self, log_p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_sft(self) -> None:
        """SFT trains the surrogate S(p) only: an RL estimator has no SFT form."""
        if self.replaces_advantages:
            raise ValueError(f"strategy.estimator={self.estimator} is an RL estimator (objective=rl); SFT trains "
                             "the surrogate S(p): set strategy.estimator=surrogate")

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
        """Per-rollout advantages for a batch of groups, concatenated in group order: the registered estimator
        of strategy.estimator, one group at a time with k = current_k() (only where replaces_advantages)."""
        fn = self.estimator_spec.fn
        if fn is None:
            raise NotImplementedError(f"{self.describe()} weights the trainer's advantages; it has no own advantages")
        if not groups:
            return torch.zeros(0, dtype=torch.float64)
        k = self.current_k()
        out = []
        for g in groups:
            if self.estimator_spec.max_k_is_rollouts and k > len(g):
                raise ValueError(f"strategy.estimator={self.estimator} with k = {k} needs at least k rollouts per "
                                 f"prompt (objective.num_generations), got M = {len(g)}")
            out.append(torch.as_tensor(fn(g, k), dtype=torch.float64).reshape(-1))
        return torch.cat(out)

    # -- test time ---------------------------------------------------------------------------
    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        if not self.replaces_advantages:
            return f"{self.name}(n={self.n})"
        k = f", k={self.k_schedule[0]}->{self.k_schedule[1]}" if self.k_schedule else ""
        return f"{self.name}(n={self.n}, estimator={self.estimator}{k})"
