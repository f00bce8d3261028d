"""Tasks: prompts, targets and scoring (reward, correctness, vote key)."""

from __future__ import annotations

from typing import Any

from .base import DataError, Score, Task


def build_task(cfg: Any) -> Task:
    """Build the task named by a dataset config. Data files are read (and checked) here, before training:
    an empty split stops the run now rather than after the training it would follow."""
    task = _build(cfg)
    for split, rows, sizes in (("train", task.train_rows(), "dataset.n_train"), ("test", task.test_rows(), "dataset.n_test")):
        if not rows:
            raise DataError(f"dataset {cfg.name!r}: the {split} split is empty (check {sizes} and the dataset's "
                            "filters and paths)")
    return task


def _build(cfg: Any) -> Task:
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
