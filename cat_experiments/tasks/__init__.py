"""Tasks: prompts, targets and scoring (reward, correctness, vote key)."""

from __future__ import annotations

from typing import Any

from .base import DataError, Score, Task


def build_task(cfg: Any) -> Task:
    """Build the task named by a dataset config. Data files are read (and checked) here, before training."""
    if cfg.name == "arithmetic":
        from .arithmetic import ArithmeticTask

        return ArithmeticTask(op=cfg.op, digits=cfg.digits, n_train=cfg.n_train, n_test=cfg.n_test,
                              data_seed=cfg.data_seed, mix=list(cfg.mix) if cfg.get("mix") else None)
    if cfg.name == "math":
        from .math import MathTask

        return MathTask(cfg)
    if cfg.name == "protein_unconditional":
        from .protein import ProteinUnconditionalTask

        return ProteinUnconditionalTask(prompt_prefix=getattr(cfg, "prompt_prefix", "") or "",
                                        n_train=cfg.n_train, data_seed=cfg.data_seed)
    if cfg.name == "protein_conditional":
        from .protein import ProteinConditionalTask

        return ProteinConditionalTask(prompt_prefix=getattr(cfg, "prompt_prefix", "") or "",
                                      n_train=cfg.n_train, n_test=cfg.n_test, data_seed=cfg.data_seed)
    raise ValueError(f"dataset.name={cfg.name!r} has no task builder here")


__all__ = ["DataError", "Score", "Task", "build_task"]
