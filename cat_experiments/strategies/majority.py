"""Majority vote with a fixed consensus threshold k: success if at least k of N samples are correct.

S(p) = B(p) = P[Binomial(N, p) >= k]. A surrogate: the true plurality vote also depends on how the
wrong answers split, which the dynamic threshold (majority_threshold) approximates per prompt.
k = 1 reduces to Pass@N; N = k = 1 is standard training.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import torch

from ..voting import plurality_outcome
from ._numerics import (
    LOG2,
    as_float64,
    flush_tiny,
    log1mexp,
    log_comb,
    mul_log,
    straight_through_loss,
    weight_log_p,
)
from .base import Group, Strategy, laplace_success_rate
from .pass_at_n import check_n
from .registry import register_strategy


def _check_k(n: int, k: int) -> tuple[int, int]:
    n = check_n(n)
    if int(k) != k or not 1 <= k <= n:
        raise ValueError(f"majority threshold k must satisfy 1 <= k <= n, got k={k}, n={n}")
    return n, int(k)


def majority_log_success(log_p: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """log B(p) = logsumexp_{i=k..N} [log C(N,i) + i log p + (N-i) log(1-p)], float64.

    Stable for any log p (including log p = 0 and log p = -1e4); 0 * log 0 is taken as 0. Where B is
    near 1 it is computed as log(1 - P[Binomial(N, p) < k]) for full relative precision.
    """
    n, k = _check_k(n, k)
    log_p = as_float64(log_p)
    i = torch.arange(0, n + 1, dtype=torch.float64, device=log_p.device)
    lp = log_p.unsqueeze(-1)
    terms = log_comb(n, i) + mul_log(i, lp) + mul_log(n - i, log1mexp(lp))
    log_upper = torch.logsumexp(terms[..., k:], dim=-1)
    if k == 0:
        return log_upper
    # When B is close to 1, log(1 - lower tail) keeps full relative precision where the upper sum would not.
    log_lower = torch.logsumexp(terms[..., :k], dim=-1)
    near_one = log_lower < -LOG2
    return torch.where(near_one, log1mexp(torch.where(near_one, log_lower, -1.0)), log_upper)


def majority_sft_weight(log_p: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """w = p B'(p) / B(p) = k C(N,k) p^k (1-p)^(N-k) / B(p), detached, float64.

    (B'(p) = N C(N-1,k-1) p^(k-1) (1-p)^(N-k), and k C(N,k) = N C(N-1,k-1).)
    Limits: w -> k as p -> 0; w -> 0 as p -> 1 when k < N (w = N when k = N). N = k = 1 gives 1.
    """
    n, k = _check_k(n, k)
    log_p = weight_log_p(log_p)
    if n == 1:
        return torch.ones_like(log_p)
    log_w = (math.log(k) + log_comb(n, k) + mul_log(k, log_p) + mul_log(n - k, log1mexp(log_p))
             - majority_log_success(log_p, n, k))
    return torch.exp(log_w)


def majority_sft_loss(log_p: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Per-example CAT loss -log B(p), differentiable in log_p (gradient -w grad log p).

    N = 1 (so k = 1) is exactly -log p (CE).
    """
    n, k = _check_k(n, k)
    if n == 1:
        return -log_p
    value = -majority_log_success(log_p.detach(), n, k)
    return straight_through_loss(value, log_p, flush_tiny(majority_sft_weight(log_p, n, k)))


def majority_rl_weight(p, n: int, k: int, form: str = "raw") -> torch.Tensor:
    """CAT weight for RL from a success probability p in [0, 1] (detached, float64).

    form="raw": B'(p) = N C(N-1,k-1) p^(k-1) (1-p)^(N-k) (the paper's main form for majority RL);
    form="log": p B'(p) / B(p), the SFT weight (ablation).
    """
    n, k = _check_k(n, k)
    p = as_float64(p).detach()
    if torch.any((p < 0) | (p > 1)) or torch.any(torch.isnan(p)):
        raise ValueError(f"p must lie in [0, 1], got min={p.min().item()} max={p.max().item()}")
    if form == "raw":
        log_w = (math.log(n) + log_comb(n - 1, k - 1) + mul_log(k - 1, torch.log(p))
                 + mul_log(n - k, torch.log1p(-p)))
        return torch.exp(log_w)
    if form == "log":
        return majority_sft_weight(torch.log(p), n, k)
    raise ValueError(f"weight form must be 'raw' or 'log', got form={form!r}")


def majority_threshold(n: int, m: int, c_max: int) -> int:
    """Dynamic consensus threshold for one prompt (method.md):

        k = max(2, min(floor(N/2) + 1, floor(N c_max / M) + 1)),

    c_max = count of the most frequent WRONG answer among the M rollouts, where every unparseable
    answer falls into ONE shared "invalid" category (as the authors' code counts it; see
    max_wrong_count). The correct answer must beat the strongest wrong one scaled to N votes, never
    needing more than a strict majority. Our addition: k is capped at N, so N = 1 gives k = 1.
    """
    n = check_n(n)
    if m < 1 or not 0 <= c_max <= m:
        raise ValueError(f"need m >= 1 and 0 <= c_max <= m, got m={m}, c_max={c_max}")
    return min(n, max(2, min(n // 2 + 1, (n * c_max) // m + 1)))


_INVALID = object()  # the one category every unparseable answer (vote key None) falls into


def max_wrong_count(vote_keys: Sequence[Hashable | None], correct: Sequence[bool]) -> int:
    """Count of the most frequent wrong answer category among the rollouts.

    All unparseable answers (vote key None) form ONE wrong category, as in the authors' code:
    keys [None x5, "7", "12", "12"] with "12" correct give c_max = 5 (the five invalid answers),
    not 1. (At test time, in maj@k, invalid answers still never win a vote.)"""
    counts = Counter(_INVALID if key is None else key
                     for key, ok in zip(vote_keys, correct, strict=True) if not ok)
    return max(counts.values(), default=0)


@register_strategy("majority", order=2)
class Majority(Strategy):
    """Majority vote over N samples. k: an int, or None for the per-prompt dynamic threshold (RL only).
    RL, estimator="surrogate": one weight per prompt from the Laplace estimate p_hat = (c+1)/(M+2), on
    the trainer's group-normalised advantages. estimator="loo" (RL only): the leave-one-out vote
    advantage of Tang et al. (majority_loo.py) replaces them; k, weight_form, clip, mean_normalize unused."""

    target_metric = "maj@k"

    def __init__(self, n: int, k: int | None = None, weight_form: str = "raw",
                 clip: float | None = None, mean_normalize: bool = False, estimator: str | None = "surrogate",
                 k_schedule: Sequence[int] | None = None):
        self.n = check_n(n)
        super().__init__(clip=clip, mean_normalize=mean_normalize, estimator=estimator, k_schedule=k_schedule)
        if k is not None:
            _check_k(self.n, k)
        if weight_form not in ("raw", "log"):
            raise ValueError(f"strategy.weight_form must be 'raw' or 'log', got {weight_form!r}")
        self.k = k
        self.weight_form = weight_form

    @classmethod
    def from_config(cls, get) -> Majority:
        return cls(n=get("n"), k=get("k"), weight_form=get("weight_form", "raw"), clip=get("clip"),
                   mean_normalize=bool(get("mean_normalize", False)), estimator=get("estimator", None),
                   k_schedule=get("k_schedule", None))

    def _fixed_k(self) -> int:
        self._check_sft()
        if self.k is None:
            raise ValueError("strategy.k=null (dynamic threshold) needs rollouts: set an integer k for SFT")
        return self.k

    def sft_loss(self, log_p):
        return majority_sft_loss(log_p, self.n, self._fixed_k())

    def sft_weight(self, log_p):
        return majority_sft_weight(log_p, self.n, self._fixed_k())

    def threshold_for(self, group: Group) -> int:
        if self.k is not None:
            return self.k
        if group.vote_keys is None:
            raise ValueError("the dynamic majority threshold needs the rollouts' vote keys")
        correct = [bool(c) for c in torch.as_tensor(group.correct).reshape(-1).tolist()]
        return majority_threshold(self.n, len(group), max_wrong_count(group.vote_keys, correct))

    def group_weights(self, group: Group) -> torch.Tensor:
        m = len(group)
        c = torch.as_tensor(group.correct, dtype=torch.float64).sum()
        w = majority_rl_weight(laplace_success_rate(c, m), self.n, self.threshold_for(group), self.weight_form)
        return w.expand(m).clone()

    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        """The expected outcome of the plurality vote (voting.plurality_outcome: invalid keys never win,
        a tie is split uniformly); correct keys are ``correct_key`` and every key flagged correct."""
        if vote_keys is None:
            raise ValueError("majority aggregation needs vote keys")
        return plurality_outcome(vote_keys, correct, gold=correct_key)

    def describe(self) -> str:
        if self.replaces_advantages:
            return super().describe()
        return f"majority(n={self.n}, k={'dynamic' if self.k is None else self.k})"
