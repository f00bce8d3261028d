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


_SPEC = re.compile(r"(\d+)([*+-])(\d+)")


def parse_spec(spec: str) -> tuple[int, str, int]:
    """A problem kind "2*1" -> (2, "*", 1): a 2-digit number times a 1-digit number."""
    m = _SPEC.fullmatch(str(spec).replace(" ", ""))
    if not m or int(m.group(1)) < 1 or int(m.group(3)) < 1:
        raise ValueError(f"dataset.mix entry {spec!r}: write DIGITS OP DIGITS with OP one of * + -, e.g. '2*1'")
    return int(m.group(1)), m.group(2), int(m.group(3))


def _numbers(digits: int) -> range:
    return range(10 ** (digits - 1) if digits > 1 else 0, 10**digits)


class ArithmeticTask(Task):
    """Synthetic arithmetic: prompt "12*34=", target "\\boxed{408}".

    One kind (default): all (a, b) pairs of `digits`-digit numbers, shuffled by `data_seed`; the first
    n_train train, the next n_test are held out. `mix=["2*2", "2*1"]`: several kinds of problem, each
    "A op B" (an A-digit and a B-digit number), in equal shares of n_train and n_test (held-out pairs
    never in training); rows carry their kind, and the rows of all kinds are shuffled together.
    """

    name = "arithmetic"
    metrics = ("pass@k", "maj@k")

    def __init__(self, op: str = "*", digits: int = 2, n_train: int = 6000, n_test: int = 400,
                 data_seed: int = 1234, mix: list[str] | None = None):
        if op not in _OPS:
            raise ValueError(f"dataset.op={op!r}: choose one of {sorted(_OPS)}")
        if digits < 1:
            raise ValueError(f"dataset.digits={digits}: must be >= 1")
        kinds = [parse_spec(s) for s in mix] if mix else [(digits, op, digits)]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"dataset.mix={list(mix)}: a kind is listed twice")
        rng = random.Random(data_seed)
        self._train, self._test = [], []
        for i, (da, kop, db) in enumerate(kinds):
            share_train = n_train // len(kinds) + (i < n_train % len(kinds))
            share_test = n_test // len(kinds) + (i < n_test % len(kinds))
            pairs = [(a, b) for a in _numbers(da) for b in _numbers(db)]
            if share_train + share_test > len(pairs):
                what = f"dataset.mix entry '{da}{kop}{db}' gets" if mix else "dataset.n_train + dataset.n_test ="
                raise ValueError(f"{what} {share_train + share_test} problems, which exceeds the "
                                 f"{len(pairs)} distinct {da}-digit {kop} {db}-digit problems")
            rng.shuffle(pairs)
            kind = f"{da}{kop}{db}"
            self._train += [self._row(a, b, kop, kind) for a, b in pairs[:share_train]]
            self._test += [self._row(a, b, kop, kind) for a, b in pairs[share_train:share_train + share_test]]
        if len(kinds) > 1:  # interleave kinds, so that any prefix (eval.num_problems) keeps the mix
            rng.shuffle(self._train)
            rng.shuffle(self._test)
        self.op = op

    @staticmethod
    def _row(a: int, b: int, op: str, kind: str) -> dict[str, Any]:
        answer = str(_OPS[op](a, b))
        return {"prompt": f"{a}{op}{b}=", "completion": f"\\boxed{{{answer}}}", "answer": answer, "kind": kind}

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
