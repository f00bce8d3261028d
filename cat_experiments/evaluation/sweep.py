"""Score candidate pools with a Task and turn them into test-time scaling curves.

    sample_pools (sampling.py) --> score_pools --> scaling_curves --> {metric: {budget: value}}

Every budget comes from the one pool of ``pool_size`` candidates per problem (method.md section 3):

- ``"pass@k"``: mean over problems of the unbiased pass@k on ``Score.correct``.
- ``"maj@k"``: mean over problems of the exact expected accuracy of a plurality vote over a random
  ``k``-subset, on ``Score.vote_key`` (None = invalid: takes a slot, never wins). The vote is counted
  correct when the winning key is a correct answer. The correct keys of a problem are
  ``task.gold_key(row)`` (when not None) together with the vote key of every candidate scored
  ``correct``; as the winners of one draw are exclusive events, maj@k is the sum over those keys of
  ``P(key wins)``. (With consistent scoring, i.e. every correct candidate voting the gold key, this is
  just the gold key's win probability; summing also covers equivalent answers with different keys,
  e.g. "1/2" and "0.5".) A problem with no correct key scores 0.
- ``"max@k"``: mean over problems of the expected maximum reward of ``k`` draws with replacement.

Budgets larger than the pool raise a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cat_experiments.evaluation.estimators import (
    expected_max_at_k_curves,
    majority_at_k_curves,
    pass_at_k_curves,
)
from cat_experiments.tasks.base import Score, Task

__all__ = [
    "METRICS",
    "check_budgets",
    "problem_curves",
    "problem_summary",
    "scaling_curves",
    "score_pools",
]

METRICS = ("pass@k", "maj@k", "max@k")


def score_pools(
    task: Task, rows: Sequence[dict[str, Any]], pools: Sequence[Sequence[str]]
) -> list[list[Score]]:
    """``task.score(row, completion)`` for every completion of every pool (same shape as ``pools``)."""
    if len(rows) != len(pools):
        raise ValueError(f"got {len(rows)} rows but {len(pools)} pools")
    return [[task.score(row, c) for c in pool] for row, pool in zip(rows, pools, strict=True)]


def check_budgets(budgets: Iterable[int], pool_size: int) -> list[int]:
    """The budgets as sorted unique ints, each in ``1..pool_size`` (ValueError naming the culprit)."""
    out: set[int] = set()
    for b in budgets:
        if isinstance(b, bool) or not float(b).is_integer():
            raise ValueError(f"budgets must be integers, got {b!r}")
        b = int(b)
        if b < 1:
            raise ValueError(f"budgets must be >= 1, got budget {b}")
        if b > pool_size:
            raise ValueError(
                f"budget {b} is larger than the pool size {pool_size}; sample pools of at least {b}"
            )
        out.add(b)
    if not out:
        raise ValueError("budgets is empty")
    return sorted(out)


def _correct_keys(task: Task, row: dict[str, Any], pool: Sequence[Score]) -> list[Any]:
    keys: list[Any] = []
    gold = task.gold_key(row)
    if gold is not None:
        keys.append(gold)
    for s in pool:
        if s.correct and s.vote_key is not None and s.vote_key not in keys:
            keys.append(s.vote_key)
    return keys or [None]  # None: never matches, the problem scores 0


def problem_curves(
    task: Task, rows: Sequence[dict[str, Any]], scores: Sequence[Sequence[Score]], budgets: Iterable[int]
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Per-problem curves: ``(budgets, {metric: array[num_problems, len(budgets)]})`` for ``task.metrics``."""
    if len(rows) != len(scores):
        raise ValueError(f"got {len(rows)} rows but {len(scores)} scored pools")
    if not scores:
        raise ValueError("no problems to evaluate")
    sizes = [len(pool) for pool in scores]
    if min(sizes) < 1:
        raise ValueError(f"pool {sizes.index(min(sizes))} is empty")
    ks = check_budgets(budgets, min(sizes))
    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown} in task.metrics; known: {list(METRICS)}")
    out: dict[str, np.ndarray] = {}
    for metric in task.metrics:
        if metric == "pass@k":
            if len(set(sizes)) == 1:
                out[metric] = pass_at_k_curves(
                    [sum(s.correct for s in pool) for pool in scores], sizes[0], ks
                )
            else:
                out[metric] = np.concatenate(
                    [pass_at_k_curves([sum(s.correct for s in pool)], len(pool), ks) for pool in scores]
                )
        elif metric == "maj@k":
            flat_votes: list[list[Any]] = []
            flat_keys: list[Any] = []
            owner: list[int] = []
            for p, (row, pool) in enumerate(zip(rows, scores, strict=True)):
                votes = [s.vote_key for s in pool]
                for key in _correct_keys(task, row, pool):
                    flat_votes.append(votes)
                    flat_keys.append(key)
                    owner.append(p)
            vals = majority_at_k_curves(flat_votes, flat_keys, ks)
            acc = np.zeros((len(scores), len(ks)))
            np.add.at(acc, np.asarray(owner), vals)
            out[metric] = np.clip(acc, 0.0, 1.0)
        else:  # max@k
            rewards = [np.array([s.reward for s in pool], dtype=float) for pool in scores]
            with np.errstate(divide="ignore"):  # log1p(-1) at rank 1 is handled by the estimator
                out[metric] = expected_max_at_k_curves(rewards, ks)
    return ks, out


def scaling_curves(
    task: Task, rows: Sequence[dict[str, Any]], scores: Sequence[Sequence[Score]], budgets: Iterable[int]
) -> dict[str, dict[int, float]]:
    """``{metric: {budget: mean over problems}}`` for every metric in ``task.metrics``."""
    ks, per_problem = problem_curves(task, rows, scores, budgets)
    return {
        metric: {k: float(v) for k, v in zip(ks, arr.mean(axis=0), strict=True)}
        for metric, arr in per_problem.items()
    }


def problem_summary(scores: Sequence[Sequence[Score]]) -> list[dict[str, Any]]:
    """A small per-problem digest: pool size, #correct, #invalid votes, mean/max reward, top vote key."""
    out = []
    for pool in scores:
        counts: dict[Any, int] = {}
        for s in pool:
            if s.vote_key is not None:
                counts[s.vote_key] = counts.get(s.vote_key, 0) + 1
        top = max(counts, key=counts.__getitem__) if counts else None
        rewards = [s.reward for s in pool]
        out.append(
            {
                "m": len(pool),
                "num_correct": int(sum(s.correct for s in pool)),
                "num_invalid": int(sum(s.vote_key is None for s in pool)),
                "mean_reward": float(np.mean(rewards)) if rewards else float("nan"),
                "max_reward": float(np.max(rewards)) if rewards else float("nan"),
                "top_vote": top,
                "top_vote_count": counts.get(top, 0) if top is not None else 0,
            }
        )
    return out
