"""Pass@N: the strategy succeeds if any of N independent samples is correct.

S(p) = 1 - (1 - p)^N, with p the model's sequence probability of the target (SFT) or of success (RL).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

from ._numerics import (
    LOG_EPS,
    as_float64,
    flush_tiny,
    log1mexp,
    log_comb,
    mul_log,
    straight_through_loss,
    weight_log_p,
)
from .base import Group, Strategy, laplace_success_rate
from .registry import register_strategy


def check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"strategy n must be an integer >= 1, got n={n}")
    return int(n)


def pass_at_n_log_success(log_p: torch.Tensor, n: int) -> torch.Tensor:
    """log S(p) = log(1 - (1 - p)^N) in log space, float64.

    log(1-p) = log1mexp(log p); log S = log1mexp(N log(1-p)). When N p is below machine epsilon
    the second log1mexp would see 0, so there log S = log N + log p (relative error < N p).
    """
    n = check_n(n)
    log_p = as_float64(log_p)
    if n == 1:
        return log_p.clone()
    tiny = log_p + math.log(n) < LOG_EPS
    log_q = log1mexp(log_p)  # log(1 - p)
    exact_in = torch.where(tiny, torch.full_like(log_p, -1.0), n * log_q)
    return torch.where(tiny, math.log(n) + log_p, log1mexp(exact_in))


def pass_at_n_sft_weight(log_p: torch.Tensor, n: int) -> torch.Tensor:
    """w = p S'(p) / S(p) = N p (1-p)^(N-1) / (1 - (1-p)^N), detached, float64.

    Limits: w -> 1 as p -> 0 (CE-like for unlikely targets); w -> 0 as p -> 1 for N > 1 (it stops
    pushing targets that are already likely). N = 1 gives exactly 1.
    """
    n = check_n(n)
    log_p = weight_log_p(log_p)
    if n == 1:
        return torch.ones_like(log_p)
    log_w = math.log(n) + log_p + mul_log(n - 1, log1mexp(log_p)) - pass_at_n_log_success(log_p, n)
    return torch.exp(log_w)


def pass_at_n_sft_loss(log_p: torch.Tensor, n: int) -> torch.Tensor:
    """Per-example CAT loss -log S(p) = -log(1 - (1 - p)^N), differentiable in log_p.

    Its gradient is -w grad(log p) with w = pass_at_n_sft_weight; N = 1 is exactly -log p (CE).
    """
    n = check_n(n)
    if n == 1:
        return -log_p
    value = -pass_at_n_log_success(log_p.detach(), n)
    return straight_through_loss(value, log_p, flush_tiny(pass_at_n_sft_weight(log_p, n)))


def pass_at_n_rl_weight(p, n: int, form: str = "raw") -> torch.Tensor:
    """CAT weight for RL from a success probability p in [0, 1] (detached, float64).

    form="raw": S'(p) = N (1-p)^(N-1)  (the chain-rule factor on grad p = E[r grad log pi]).
    form="log": p S'(p) / S(p), the SFT weight (the paper's main form for Pass@N RL).
    """
    n = check_n(n)
    p = as_float64(p).detach()
    if torch.any((p < 0) | (p > 1)) or torch.any(torch.isnan(p)):
        raise ValueError(f"p must lie in [0, 1], got min={p.min().item()} max={p.max().item()}")
    if form == "raw":
        return n * torch.exp(mul_log(n - 1, torch.log1p(-p)))
    if form == "log":
        return pass_at_n_sft_weight(torch.log(p), n)
    raise ValueError(f"weight form must be 'raw' or 'log', got form={form!r}")


def pass_at_n_unbiased_weight(c, m, n: int) -> torch.Tensor:
    """Unbiased estimate of the raw Pass@N weight S'(p) = N (1-p)^(N-1) from c successes in m trials.

        w_hat = N C(m - c, N - 1) / C(m, N - 1)

    The fraction is the probability that N - 1 of the m trials, drawn without replacement, all
    fail; for c ~ Binomial(m, p) its expectation is exactly (1-p)^(N-1) (needs m >= N - 1).
    In a rollout group, rollout i uses the OTHER M - 1 rollouts (c_-i successes among m = M - 1),
    so w_hat_i is independent of rollout i and w_hat_i * r_i * grad log pi(y_i) is an unbiased
    estimate of grad S(p) = S'(p) grad p. For a failed rollout this is C(M-c-1, N-1) / C(M-1, N-1)
    (method.md; zero when c > M - N), the pass@k advantage of Chen et al. 2025 and PKPO.
    """
    n = check_n(n)
    c = as_float64(c)
    m = as_float64(m)
    if torch.any(m < n - 1):
        raise ValueError(f"the unbiased Pass@N estimator needs at least N - 1 = {n - 1} other rollouts, got m={m.min().item():g}")
    if torch.any((c < 0) | (c > m)):
        raise ValueError("successes c must lie in [0, m]")
    fails = m - c
    ratio = torch.exp(log_comb(torch.clamp(fails, min=n - 1), n - 1) - log_comb(m, n - 1))
    return n * torch.where(fails < n - 1, torch.zeros_like(ratio), ratio)


@register_strategy("pass_at_n", order=1)
class PassAtN(Strategy):
    """Pass@N with a checker. RL estimators of p for the surrogate (CAT weight):
    - "sequence" (paper): p_i = exp(summed old-policy log-prob of rollout i), clamped to [1e-10, 1-1e-10];
    - "laplace": one p_hat = (c+1)/(M+2) per prompt;
    - "unbiased" (our default for groups): leave-one-out N C(M-1-c_-i, N-1)/C(M-1, N-1), raw form only.
    strategy.estimator other than surrogate (pkpo, maxrl, maxrl_no_baseline, best_sample, passk_training;
    docs/method.md) replaces the weighted advantage; p_estimator and weight_form are then unused.
    """

    target_metric = "pass@k"

    def __init__(self, n: int, weight_form: str = "log", p_estimator: str = "sequence",
                 clip: float | None = None, mean_normalize: bool = False, estimator: str | None = None,
                 k_schedule: Sequence[int] | None = None):
        self.n = check_n(n)
        super().__init__(clip=clip, mean_normalize=mean_normalize, estimator=estimator, k_schedule=k_schedule)
        if weight_form not in ("raw", "log"):
            raise ValueError(f"strategy.weight_form must be 'raw' or 'log', got {weight_form!r}")
        if p_estimator not in ("sequence", "laplace", "unbiased"):
            raise ValueError(f"strategy.p_estimator for pass_at_n must be sequence|laplace|unbiased, got {p_estimator!r}")
        if p_estimator == "unbiased" and weight_form != "raw":
            raise ValueError("strategy.p_estimator=unbiased estimates the raw weight S'(p): set strategy.weight_form=raw")
        self.weight_form = weight_form
        self.p_estimator = p_estimator
        self.per_sample_weights = p_estimator != "laplace"  # laplace: one p_hat per prompt

    @classmethod
    def from_config(cls, get) -> PassAtN:
        return cls(n=get("n"), weight_form=get("weight_form", "log"), p_estimator=get("p_estimator", "sequence"),
                   clip=get("clip"), mean_normalize=bool(get("mean_normalize", False)),
                   estimator=get("estimator", None), k_schedule=get("k_schedule", None))

    @property
    def needs_sequence_log_probs(self) -> bool:
        return self.p_estimator == "sequence" and not self.replaces_advantages

    def sft_loss(self, log_p):
        self._check_sft()
        return pass_at_n_sft_loss(log_p, self.n)

    def sft_weight(self, log_p):
        self._check_sft()
        return pass_at_n_sft_weight(log_p, self.n)

    def group_weights(self, group: Group) -> torch.Tensor:
        m = len(group)
        correct = torch.as_tensor(group.correct, dtype=torch.float64).reshape(-1)
        if self.p_estimator == "unbiased":
            if m - 1 < self.n - 1:
                raise ValueError(
                    f"p_estimator=unbiased needs num_generations >= strategy.n (got M={m}, N={self.n})")
            c_others = correct.sum() - correct
            return pass_at_n_unbiased_weight(c_others, m - 1, self.n)
        if self.p_estimator == "laplace":
            p = laplace_success_rate(correct.sum(), m).expand(m)
        else:
            if group.seq_log_probs is None:
                raise ValueError("p_estimator=sequence needs the rollouts' sequence log-probs")
            p = torch.exp(as_float64(group.seq_log_probs).reshape(-1)).clamp(1e-10, 1 - 1e-10)
        return pass_at_n_rl_weight(p, self.n, self.weight_form)

    def aggregate(self, correct: Sequence[bool], vote_keys: Sequence[Hashable | None] | None = None,
                  rewards: Sequence[float] | None = None, correct_key: Hashable | None = None) -> float:
        """Pass@N at test time: success if any candidate is correct."""
        return float(any(bool(c) for c in correct))
