"""Log-space helpers for the CAT formulas.

Sequence log-probs of long completions are -1e3 .. -1e4, so p = exp(log p) underflows to 0.
Everything here works on log p directly and stays finite (no probability floor).
"""

from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)
# Below this, N p is under float64 resolution and log S(p) = log N + log p to machine precision.
LOG_EPS = math.log(torch.finfo(torch.float64).eps)


def as_float64(x) -> torch.Tensor:
    """Return x as a float64 tensor (no copy when it already is one)."""
    return torch.as_tensor(x, dtype=torch.float64)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate everywhere (Maechler 2012).

    Uses log(-expm1(x)) near 0 and log1p(-exp(x)) far from it. log1mexp(0) = -inf.
    """
    x = torch.clamp(x, max=0.0)
    near = x > -LOG2
    # Feed each branch only inputs it handles, so neither produces NaN in the unused lanes.
    x_near = torch.where(near, x, torch.full_like(x, -1.0))
    x_far = torch.where(near, torch.full_like(x, -1.0), x)
    return torch.where(near, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def log_comb(n, k) -> torch.Tensor:
    """log C(n, k) via lgamma, float64, broadcasting over tensors of n and k (on k's device)."""
    k = as_float64(k)
    n = torch.as_tensor(n, dtype=torch.float64, device=k.device)
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def mul_log(count, log_x: torch.Tensor) -> torch.Tensor:
    """count * log_x with the convention 0 * log 0 = 0 (so p^0 = 1 even at p = 0)."""
    count = torch.as_tensor(count, dtype=torch.float64, device=log_x.device)
    count, log_x = torch.broadcast_tensors(count, log_x)
    return torch.where(count == 0, torch.zeros_like(log_x), count * torch.where(count == 0, 0.0, log_x))


# Weights reach their p -> 0 limits (1 for Pass@N, k for majority) to float64 precision long before
# log p = -1e5; clamping there keeps p = 0 (log p = -inf) finite without touching any real value.
WEIGHT_LOG_P_MIN = -1e5


def weight_log_p(log_p) -> torch.Tensor:
    """Detached float64 log p for weight formulas, with -inf (p = 0) mapped to WEIGHT_LOG_P_MIN."""
    return torch.clamp(as_float64(log_p).detach(), min=WEIGHT_LOG_P_MIN)


def flush_tiny(w: torch.Tensor, floor: float = 1e-30) -> torch.Tensor:
    """Zero weights below `floor`: their gradient contribution is nil, and float32 denormals
    (below ~1e-38) make CPU matmuls extremely slow (seen on the toy task)."""
    return torch.where(w < floor, torch.zeros_like(w), w)


def straight_through_loss(value: torch.Tensor, log_p: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A tensor equal to `value` whose gradient w.r.t. log_p is -weight.

    This is CAT in one line: the loss -log S(p) has d/dlog p = -p S'(p)/S(p) = -w, so its gradient
    is the ordinary CE gradient times one detached scalar per sequence. Writing it this way keeps
    the gradient exact and finite at any log p, where differentiating log S(p) term by term would
    hit inf * 0 at p -> 0 or p -> 1.
    """
    value = value.to(log_p.dtype).detach()
    weight = weight.to(log_p.dtype).detach()
    return value - weight * (log_p - log_p.detach())
