"""The sample store: every evaluated model's pools on disk, written while they are drawn.

One store per (checkpoint, prompts, sampling settings, seed) under ``cache_dir/samples/<key>/``
(cache.samples_fields names what the key hashes; ``key.json`` in the store lists it):

    part-*.jsonl          one row per problem: problem_id, prompt, completions (texts), num_tokens,
                          finish_reasons ("stop" | "length"); written a chunk of problems at a time
    scores-<key>.jsonl    one row per problem: problem_id, vote_keys (the extracted answers; null =
                          invalid), correct, rewards; keyed by the scoring settings (cache.scores_fields)

Both are JSON Lines, so ``datasets.load_dataset("json", data_files=".../part-*.jsonl")`` reads them.
A part is written to a temporary name, flushed to disk and renamed, so a crash loses at most the chunk
in flight and never leaves a torn file. A problem's pool is a function of (seed, problem id) and the
checkpoint (the keyed samplers of sampling.py and engines.py), so sampling only the problems a killed
run left out gives exactly the pools of an uninterrupted run. Scores are computed from the stored texts:
a new grader or new budgets never sample again.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..tasks.base import Score, Task

__all__ = ["SampleStore", "as_scores", "score_rows", "verdict_changes"]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class SampleStore:
    """The pools and scores of one evaluated model (a directory; see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.jsonl"))

    def stored_ids(self) -> set[int]:
        return {int(r["problem_id"]) for p in self.parts() for r in _read_jsonl(p)}

    def write_part(self, rows: Sequence[dict[str, Any]], tag: str) -> Path:
        """Store the pools of a chunk of problems (each row: problem_id, prompt, completions, num_tokens,
        finish_reasons) as one part; ``tag`` keeps parts of different ranks and runs apart."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"part-{tag}-{uuid.uuid4().hex[:8]}.jsonl"
        _write_jsonl(path, rows)
        return path

    def load(self, problem_ids: Sequence[int], prompts: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The stored rows of ``problem_ids``, in that order. With ``prompts``, each stored prompt must
        equal the prompt the problem has now (a changed task would otherwise be scored on old pools)."""
        rows: dict[int, dict[str, Any]] = {}
        for part in self.parts():
            for r in _read_jsonl(part):
                rows.setdefault(int(r["problem_id"]), r)  # two jobs may store one problem: same pool
        missing = [i for i in problem_ids if i not in rows]
        if missing:
            raise FileNotFoundError(f"sample store {self.root}: problems {missing[:10]} are not stored")
        out = [rows[i] for i in problem_ids]
        if prompts is not None:
            for row, prompt in zip(out, prompts, strict=True):
                if row["prompt"] != prompt:
                    raise ValueError(f"sample store {self.root}: problem {row['problem_id']} was sampled for "
                                     f"the prompt {row['prompt']!r}, the task now gives {prompt!r}; bump "
                                     "cache.KEY_VERSION after a change to the task's prompts")
        return out

    # ---- scores ------------------------------------------------------------------------------------------
    def scores_path(self, key: str) -> Path:
        return self.root / f"scores-{key}.jsonl"

    def read_scores(self, key: str) -> dict[int, dict[str, Any]]:
        path = self.scores_path(key)
        return {int(r["problem_id"]): r for r in _read_jsonl(path)} if path.exists() else {}

    def write_scores(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        _write_jsonl(self.scores_path(key), sorted(rows, key=lambda r: r["problem_id"]))

    def other_scores(self, key: str) -> Path | None:
        """The newest scores file of another scoring setting (for counting what a regrade changed)."""
        others = [p for p in self.root.glob("scores-*.jsonl") if p != self.scores_path(key)]
        return max(others, key=lambda p: p.stat().st_mtime) if others else None


def score_rows(task: Task, rows: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``task.score`` on every stored completion: one scores row per problem."""
    out = []
    for row, sample in zip(rows, samples, strict=True):
        scores = [task.score(row, c) for c in sample["completions"]]
        out.append({"problem_id": int(sample["problem_id"]), "vote_keys": [s.vote_key for s in scores],
                    "correct": [bool(s.correct) for s in scores], "rewards": [float(s.reward) for s in scores]})
    return out


def as_scores(row: dict[str, Any]) -> list[Score]:
    return [Score(reward=r, correct=c, vote_key=k)
            for r, c, k in zip(row["rewards"], row["correct"], row["vote_keys"], strict=True)]


def verdict_changes(old: dict[int, dict[str, Any]], new: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(completions whose correctness changed, completions compared) between two scorings."""
    changed = compared = 0
    for row in new:
        before = old.get(int(row["problem_id"]))
        if before is None:
            continue
        for a, b in zip(before["correct"], row["correct"], strict=True):
            compared += 1
            changed += a != b
    return changed, compared
