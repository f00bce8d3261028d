"""The embedded default task: synthetic arithmetic with MATH-style \\boxed{} answers.

Two-digit multiplication by default: a tiny model trained for a few CPU-minutes stays uncertain on
it (training-set p spread over (0, 1)), which is the regime where sampling N times matters and CAT
differs from CE (docs/notes/toy-effect.md: addition gets fitted, p ~ 1, and CAT only freezes).
"""

from __future__ import annotations

import random
import re
from typing import Any

from .base import Score, Task

_OPS = {"*": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def boxed_integer(text: str) -> str | None:
    """The integer in the last \\boxed{...} of `text`, canonicalised ("007" -> "7"); None if absent."""
    found = _BOXED.findall(text)
    if not found:
        return None
    body = found[-1].strip()
    if not re.fullmatch(r"-?\d+", body):
        return None
    return str(int(body))


class ArithmeticTask(Task):
    """All (a, b) pairs of `digits`-digit numbers, shuffled by `data_seed`; the first n_train train,
    the next n_test are held out. Prompt "12*34=", target "\\boxed{408}"."""

    name = "arithmetic"
    metrics = ("pass@k", "maj@k")

    def __init__(self, op: str = "*", digits: int = 2, n_train: int = 6000, n_test: int = 400,
                 data_seed: int = 1234):
        if op not in _OPS:
            raise ValueError(f"dataset.op={op!r}: choose one of {sorted(_OPS)}")
        if digits < 1:
            raise ValueError(f"dataset.digits={digits}: must be >= 1")
        lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
        pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
        if n_train + n_test > len(pairs):
            raise ValueError(f"dataset.n_train + dataset.n_test = {n_train + n_test} exceeds the "
                             f"{len(pairs)} distinct {digits}-digit problems")
        random.Random(data_seed).shuffle(pairs)
        self.op = op
        self._train = [self._row(a, b) for a, b in pairs[:n_train]]
        self._test = [self._row(a, b) for a, b in pairs[n_train:n_train + n_test]]

    def _row(self, a: int, b: int) -> dict[str, Any]:
        answer = str(_OPS[self.op](a, b))
        return {"prompt": f"{a}{self.op}{b}=", "completion": f"\\boxed{{{answer}}}", "answer": answer}

    def train_rows(self):
        return list(self._train)

    def test_rows(self):
        return list(self._test)

    def score(self, row, completion):
        key = boxed_integer(completion)
        correct = key is not None and key == row["answer"]
        return Score(reward=float(correct), correct=correct, vote_key=key)

    def gold_key(self, row):
        return row["answer"]
