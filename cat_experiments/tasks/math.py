"""MATH (Hendrycks et al. 2021): problems with \\boxed{} answers, graded by the paper's checker or
math-verify (tasks/math_grading.py). Sources: a local JSONL/JSON/Parquet file, or a hub dataset."""

from __future__ import annotations

import random
import re
from typing import Any

from .base import DataError, Score, Task
from .files import read_rows
from .math_grading import extract_answer, grade, is_equivalent, last_boxed, normalize_answer, vote_key

__all__ = ["MathTask", "extract_answer", "is_equivalent", "last_boxed", "normalize_answer", "vote_key",
           "normalize_row", "grade"]


def _level(value: Any) -> int | None:
    """'Level 3' or 3 -> 3; 'Level ?' -> None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


def normalize_row(row: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Common fields: problem, solution, answer (from the solution's last \\boxed{} if absent),
    level (int), subject (also read from 'type')."""
    if "problem" not in row:
        raise DataError(f"{where}: row has no field 'problem'")
    answer = row.get("answer")
    if answer is None:
        answer = last_boxed(row.get("solution") or "")
        if answer is None:
            raise DataError(f"{where}: row has no 'answer' and its solution has no \\boxed{{}}")
    return {"problem": row["problem"], "solution": row.get("solution") or "", "answer": str(answer),
            "level": _level(row.get("level")), "subject": row.get("subject") or row.get("type")}


# Split sizes of the hub datasets the presets use, for plans made without the data (dry runs offline):
# (hub id, split, levels) -> rows. MATH: 7,500 train / 5,000 test, 2,462 test problems at levels 1-3;
# MATH-500: 500, 238 at levels 1-3 (counted on the MATH-500 file). Offline plans only: a run counts
# the rows it loads.
KNOWN_SPLIT_SIZES = {
    ("EleutherAI/hendrycks_math", "train", None): 7500,
    ("EleutherAI/hendrycks_math", "train", (1, 2, 3)): 3506,  # 566 + 1,348 + 1,592 (published level counts)
    ("EleutherAI/hendrycks_math", "test", None): 5000,
    ("EleutherAI/hendrycks_math", "test", (1, 2, 3)): 2462,
    ("HuggingFaceH4/MATH-500", "test", None): 500,
    ("HuggingFaceH4/MATH-500", "test", (1, 2, 3)): 238,
}


def known_split_size(hub_id: str | None, split: str, levels: Any = None, subjects: Any = None) -> int | None:
    """The number of rows of a hub split after the level filter, when known (no subject filter)."""
    if not hub_id or subjects:
        return None
    key = tuple(sorted(int(v) for v in levels)) if levels else None
    return KNOWN_SPLIT_SIZES.get((hub_id, split, key))


class MathTask(Task):
    name = "math"
    metrics = ("pass@k", "maj@k")

    def __init__(self, cfg: Any):
        if cfg.target not in ("answer", "solution"):
            raise DataError(f"dataset.target={cfg.target!r}: choose answer or solution")
        self.cfg = cfg
        self.grader = cfg.grader
        train = self._load(cfg.path, cfg.hub_id, cfg.hub_configs, cfg.split, "dataset.path")
        if cfg.shuffle_seed is not None:  # hub splits come grouped by subject: mix before taking ranges
            random.Random(int(cfg.shuffle_seed)).shuffle(train)
        start = int(cfg.train_start)
        self._train = train[start:start + int(cfg.n_train)] if cfg.n_train else train[start:]
        test_configs = cfg.test_hub_configs if cfg.test_hub_id else cfg.hub_configs
        test = self._load(cfg.test_path, cfg.test_hub_id or cfg.hub_id, test_configs, cfg.test_split,
                          "dataset.test_path")
        self._test = test[: int(cfg.n_test)] if cfg.n_test else test
        if not self._train:
            raise DataError(f"dataset.train_start={start}: the training split has only {len(train)} rows "
                            f"after filters (dataset.path={cfg.path!r})")

    def _load(self, path, hub_id, hub_configs, split, key) -> list[dict[str, Any]]:
        if path:
            raw = [(f"{path}:{i + 1}", r) for i, r in enumerate(read_rows(path, required=("problem",), key=key))]
        elif hub_id:
            from datasets import concatenate_datasets, load_dataset

            try:
                parts = [load_dataset(hub_id, c, split=split) for c in hub_configs] if hub_configs else \
                    [load_dataset(hub_id, split=split)]
            except Exception as err:  # offline and not cached, unreachable, unknown id: one line naming the key
                from ..hub import hub_error, hub_failure

                if hub_failure(err) is None and not isinstance(err, FileNotFoundError):
                    raise
                setting = "dataset.test_hub_id" if key == "dataset.test_path" and self.cfg.test_hub_id else "dataset.hub_id"
                raise hub_error(setting, hub_id, err, kind="dataset") from err
            raw = [(f"{hub_id}[{split}]#{i}", r) for i, r in enumerate(concatenate_datasets(parts))]
        else:
            raise DataError(f"{key} is empty and dataset.hub_id is not set: give a file or a hub dataset")
        rows = [normalize_row(r, where) for where, r in raw]
        source = f"{key}={path!r}" if path else f"dataset.hub_id={hub_id!r} (split {split!r})"
        if not rows:
            raise DataError(f"{source}: no rows")
        for field, values in (("level", self.cfg.levels), ("subject", self.cfg.subjects)):
            if values:
                found = sorted({str(r[field]) for r in rows})
                rows = [r for r in rows if r[field] in set(values)]
                if not rows:  # a filter that matches nothing would otherwise surface after training
                    raise DataError(f"dataset.{field}s={list(values)}: no row of {source} matches "
                                    f"(its {field}s: {', '.join(found[:12])})")
        template = self.cfg.prompt_template
        for r in rows:
            r["prompt"] = template.format(problem=r["problem"])
            r["completion"] = f"\\boxed{{{r['answer']}}}" if self.cfg.target == "answer" else r["solution"]
        return rows

    def train_rows(self):
        return list(self._train)

    def test_rows(self):
        return list(self._test)

    def score(self, row, completion):
        correct, key = grade(completion, row["answer"], grader=self.grader)
        return Score(reward=float(correct), correct=bool(correct), vote_key=key)

    def gold_key(self, row):
        return vote_key(row["answer"], grader=self.grader)
