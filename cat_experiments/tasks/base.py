"""The Task interface: what to train on and how a completion is scored.

The RL trainer, the evaluator and the report all score through `Task.score`, so a grading fix
reaches every number at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Score:
    """One completion's score: reward (RL), correctness (pass@k, maj@k) and vote key (maj@k;
    None = unparseable, which takes a slot in a vote but never wins). `invalid` names why a completion
    is not a well-formed answer at all, for tasks that say (protein: "empty", "non_amino_acid",
    "too_short"); the RL trainer logs the share of each reason per step."""

    reward: float
    correct: bool
    vote_key: str | None
    invalid: str | None = None


class Task:
    """A dataset of prompt/target rows plus a scorer.

    Rows are dicts with at least "prompt" (str) and "completion" (str, the SFT target without EOS);
    any other columns (e.g. "answer") travel with the row and reach `score`.
    `metrics` lists what the evaluator reports: "pass@k", "maj@k" (binary correctness) and/or
    "max@k" (expected max reward, for reward tasks).
    """

    name: str = "task"
    metrics: tuple[str, ...] = ("pass@k", "maj@k")
    # The reasons Score.invalid can take (the RL trainer logs each one's share per step); () = none
    invalid_reasons: tuple[str, ...] = ()

    def train_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def test_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def score(self, row: dict[str, Any], completion: str) -> Score:
        raise NotImplementedError

    def sample_stats(self, rows: list[dict[str, Any]], pools: list[list[str]]) -> dict[str, Any] | None:
        """Statistics of evaluation pools that the curves do not show (stored in results.json); None = none."""
        return None

    def gold_key(self, row: dict[str, Any]) -> str | None:
        """The vote key of the correct answer (for maj@k); None when the task has no single answer."""
        return None


class DataError(ValueError):
    """Input data is missing or malformed; the message names the file, line and field."""
