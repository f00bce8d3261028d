"""Argument checks shared by the estimators: integer budgets, budget ranges, budget lists."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

# A tilt p is acceptable for budget k when the tilted normaliser C(m,k) p^k (1-p)^(m-k) is at least
# exp(-LOG_FLOOR): far above the float64 underflow (~1e-308) so that the terms that underflow
# inside the polynomial products are negligible (< 1e-40 relative) next to it.
LOG_FLOOR = 600.0


# ----------------------------------------------------------------------------- argument checks


def as_int(value: Any, name: str) -> int:
    """``operator.index(value)`` (integral floats accepted); a TypeError names the argument."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return int(value)
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def check_budget(k: int, m: int, name: str = "k") -> int:
    k = as_int(k, name)
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {name}={k}")
    if k > m:
        raise ValueError(f"{name} must be <= the pool size m={m}, got {name}={k}")
    return k


def resolve_ks(
    ks: Iterable[int] | int | None, m: int | None, *, upper: int | None, name: str = "ks"
) -> np.ndarray:
    """Budgets as an int64 array. ``None`` -> ``1..m``. Every budget must be >= 1 (and <= upper)."""
    if ks is None:
        if m is None:
            raise ValueError(f"{name}=None needs pools of one common size; pass {name} explicitly")
        return np.arange(1, m + 1, dtype=np.int64)
    arr = np.asarray(ks)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of budgets, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0)):
        raise ValueError(f"{name} must hold integers, got {arr!r}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 1:
        raise ValueError(f"{name} must all be >= 1, got min({name})={int(arr.min())}")
    if upper is not None and arr.size and arr.max() > upper:
        raise ValueError(f"{name} must all be <= the pool size m={upper}, got max({name})={int(arr.max())}")
    return arr
