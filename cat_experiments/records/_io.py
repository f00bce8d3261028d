"""Small helpers shared by the records modules: JSON-friendly copies, atomic writes, metric order."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_METRIC_ORDER = ("pass@k", "maj@k", "max@k")


def plain_copy(obj: Any) -> Any:
    """A JSON-friendly copy: OmegaConf containers, numpy scalars/arrays, Paths, tuples -> plain types."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return plain_copy(OmegaConf.to_container(obj, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): plain_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain_copy(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar / array, torch tensor
        return obj.tolist()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def atomic_write(path: Path, writer, mode: str = "w") -> None:
    """Write ``path`` via a temp file in the same dir + os.replace (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            writer(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sorted_metrics(metrics) -> list[str]:
    known = [m for m in _METRIC_ORDER if m in metrics]
    return known + sorted(m for m in metrics if m not in _METRIC_ORDER)


def branches_int(branches: Mapping[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """Budgets as ints and values as floats (accepts the string keys of JSON)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for branch, metrics in branches.items():
        out[str(branch)] = {
            str(metric): {int(b): float(v) for b, v in sorted(curve.items(), key=lambda kv: int(kv[0]))}
            for metric, curve in metrics.items()
        }
    return out


def metric_budget_name(metric: str, budget: int) -> str:
    """``("pass@k", 16) -> "pass@16"`` (metrics not ending in ``@k`` get ``@16`` appended)."""
    return f"{metric[:-2]}@{budget}" if metric.endswith("@k") else f"{metric}@{budget}"
