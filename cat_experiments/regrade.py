"""Regrade a finished run from its stored samples: `python -m cat_experiments.regrade RUN_DIR [overrides]`.

    python -m cat_experiments.regrade outputs/demo/2026-12-06_10-00-00 dataset.grader=paper
    python -m cat_experiments.regrade outputs/demo/2026-12-06_10-00-00 "eval.budgets=[1,2,4,8]"

Reads the run's results.json (its config and the sample store of every branch), applies the overrides
(scoring settings only: ``dataset.*``, ``eval.budgets``, ``eval.num_problems``), rescores the stored
completions and recomputes the curves without sampling or loading a model, logs how many verdicts
changed, and rewrites the run's records (the previous results.json is kept as results.<time>.json).
Works for RL runs too, whose branches a new grader would otherwise send back to training.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .config import ConfigError
from .tasks.base import DataError

log = logging.getLogger("cat_experiments")

SCORING_OVERRIDES = ("dataset.", "eval.budgets", "eval.num_problems")


def regrade(run_dir: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Rescore the run in ``run_dir`` with ``overrides`` applied; returns (and writes) the new results."""
    from . import records
    from .config import Config
    from .evaluation.store import SampleStore
    from .pipeline import Pipeline

    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results.json (pass a finished run's directory)")
    old = json.loads(path.read_text())
    if not old.get("samples"):
        raise DataError(f"{path}: this run names no sample stores (written before stored samples); rerun its "
                        "evaluation with stage=eval instead")
    for item in overrides:
        if not item.split("=", 1)[0].startswith(SCORING_OVERRIDES) or "=" not in item:
            raise ConfigError(f"config error: {item!r}: regrade takes scoring settings only "
                              f"(key=value with a key starting {', '.join(SCORING_OVERRIDES)})")
    cfg = OmegaConf.merge(OmegaConf.structured(Config), old["config"])
    cfg.merge_with_dotlist(overrides)  # a misspelt key fails here (the schema is struct)
    pipeline = Pipeline(cfg)
    rows = pipeline.eval_rows("test")
    results: dict[str, Any] = {"branches": {}, "stderr": {}, "per_problem": {}, "samples": {}, "regraded": {}}
    for branch, store_dir in old["samples"].items():
        out = pipeline.score_store(branch, SampleStore(store_dir), rows)
        results["branches"][branch] = out["curves"]
        results["stderr"][branch] = out["stderr"]
        results["per_problem"][branch] = out["per_problem"]
        results["samples"][branch] = out["samples"]
        results["regraded"][branch] = out.get("regraded", {"changed": 0, "compared": 0, "against": None})
        log.info("[regrade:%s] %s", branch, results["regraded"][branch])
    pipeline.train_stats = old.get("train_stats", {})
    results = pipeline.describe_results(results)
    shutil.copy2(path, run_dir / f"results.{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    records.write_records(run_dir, results)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = regrade(argv[0], argv[1:])
    except (ConfigError, DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .records import summary_table

    print(summary_table(results))
    for branch, info in results["regraded"].items():
        print(f"{branch}: {info['changed']} of {info['compared']} verdicts changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
