"""Stored samples (evaluation/store.py) and scoring apart from sampling (Pipeline.evaluate / score_store).

- parts are written atomically, read back in problem order, deduplicated, checked against the prompts;
- `datasets` opens the parts and the scores directly (JSON Lines);
- a new grader rescores stored completions and counts the verdicts that changed; new budgets recompute
  without sampling; `python -m cat_experiments.regrade` does it for a finished run;
- stage=eval never trains: a missing checkpoint stops it at once, naming the cache dir;
- a run killed during evaluation (SIGKILL, 1 and 2 processes) and started again samples only the missing
  problems and gives exactly the curves of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, compose

from cat_experiments.evaluation.store import SampleStore, score_rows, verdict_changes
from cat_experiments.tasks.base import Score, Task


def _row(i: int, completions: list[str], prompt: str | None = None) -> dict:
    return {"problem_id": i, "prompt": prompt or f"p{i}", "completions": completions,
            "num_tokens": [len(c) for c in completions], "finish_reasons": ["stop"] * len(completions)}


def test_parts_round_trip_in_problem_order(tmp_path):
    store = SampleStore(tmp_path / "s")
    store.write_part([_row(2, ["a", "b"]), _row(0, ["c", "d"])], tag="000000-r0")
    store.write_part([_row(1, ["e", "f"])], tag="000001-r1")
    store.write_part([_row(1, ["e", "f"])], tag="000001-r0")  # a problem two jobs both stored
    (tmp_path / "s" / ".part-x.jsonl.1234.tmp").write_text('{"problem_id": 9, "prompt"')  # a torn write
    assert store.stored_ids() == {0, 1, 2}
    rows = store.load([0, 1, 2], ["p0", "p1", "p2"])
    assert [r["completions"] for r in rows] == [["c", "d"], ["e", "f"], ["a", "b"]]
    with pytest.raises(FileNotFoundError, match=r"problems \[3\] are not stored"):
        store.load([0, 3])
    with pytest.raises(ValueError, match="problem 1 was sampled for the prompt 'p1'"):
        store.load([1], ["other prompt"])
    assert not list((tmp_path / "s").glob("*.tmp.*"))


def test_datasets_opens_the_store(tmp_path):
    datasets = pytest.importorskip("datasets")
    store = SampleStore(tmp_path / "s")
    store.write_part([_row(0, ["x", "y"]), _row(1, ["z", "w"])], tag="a")
    store.write_scores("k", score_rows(_Letter("x"), [{}, {}], store.load([0, 1])))
    parts = datasets.load_dataset("json", data_files=[str(p) for p in store.parts()], split="train")
    assert sorted(parts["problem_id"]) == [0, 1] and set(parts.column_names) >= {"completions", "num_tokens",
                                                                                   "finish_reasons", "prompt"}
    scores = datasets.load_dataset("json", data_files=str(store.scores_path("k")), split="train")
    assert scores["correct"] == [[True, False], [False, False]]


class _Letter(Task):
    """Correct when the completion is the letter; the grader is which letter."""

    def __init__(self, letter: str):
        self.letter = letter

    def score(self, row, completion):
        ok = completion == self.letter
        return Score(reward=float(ok), correct=ok, vote_key=completion or None)


def test_verdict_changes_counts_flipped_completions():
    old = {0: {"problem_id": 0, "correct": [True, False, False]}, 1: {"problem_id": 1, "correct": [False]}}
    new = [{"problem_id": 0, "correct": [False, False, True]}, {"problem_id": 1, "correct": [False]},
           {"problem_id": 2, "correct": [True]}]  # problem 2 was not scored before: not compared
    assert verdict_changes(old, new) == (2, 4)


def _pipeline(tmp_path, task, *overrides):
    from cat_experiments.pipeline import Pipeline

    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}", "eval.pool_size=4", "eval.budgets=[1,2,4]", *overrides])
    return Pipeline(cfg, task=task)


class _Rows(_Letter):
    def __init__(self, letter):
        super().__init__(letter)

    def test_rows(self):
        return [{"prompt": f"p{i}"} for i in range(3)]


def test_a_new_grader_rescores_stored_completions_and_counts_changes(tmp_path, caplog):
    store = SampleStore(tmp_path / "s")
    store.write_part([_row(0, ["a", "a", "b", "c"]), _row(1, ["b", "b", "b", "a"]), _row(2, ["c", "c", "c", "c"])],
                     tag="x")
    rows = _Rows("a").test_rows()
    first = _pipeline(tmp_path, _Rows("a")).score_store("cat", store, rows)
    assert "regraded" not in first and first["curves"]["pass@k"][1] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    # another grader (its scoring settings give another scores file): the stored completions are rescored
    with caplog.at_level("INFO", logger="cat_experiments"):
        second = _pipeline(tmp_path, _Rows("b"), "dataset.grader=paper").score_store("cat", store, rows)
    # verdicts that flip between "a is right" and "b is right": problem 0: a,a,b (3), problem 1: b,b,b,a (4)
    assert second["regraded"]["changed"] == 7 and second["regraded"]["compared"] == 12
    assert "7 verdicts changed" in caplog.text
    assert second["curves"]["pass@k"][1] == pytest.approx((1 / 4 + 3 / 4 + 0) / 3)
    # scored once per setting: the same grader again reads its scores file
    again = _pipeline(tmp_path, _Rows("b"), "dataset.grader=paper").score_store("cat", store, rows)
    assert "regraded" not in again and again["curves"] == second["curves"]
    # per-problem values and the standard error over problems
    p1 = [row[0] for row in second["per_problem"]["pass@k"]]
    mean = sum(p1) / 3
    se = (sum((v - mean) ** 2 for v in p1) / 2) ** 0.5 / 3 ** 0.5
    assert second["stderr"]["pass@k"][1] == pytest.approx(se)


def test_new_budgets_recompute_without_sampling(tmp_path, monkeypatch):
    pipe = _pipeline(tmp_path, None)
    pipe.base_model()
    path = pipe.base_model()
    full = pipe.evaluate("base", path)
    import cat_experiments.evaluation.engines as engines

    monkeypatch.setattr(engines, "open_engine", lambda *a, **k: pytest.fail("sampled again"))
    fewer = _pipeline(tmp_path, None, "eval.budgets=[1,4]").evaluate("base", path)
    assert fewer["curves"]["pass@k"] == {1: full["curves"]["pass@k"][1], 4: full["curves"]["pass@k"][4]}
    assert fewer["samples"] == full["samples"]


# ---- end to end -------------------------------------------------------------------------------------------
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS"):
    ENV.pop(var, None)

# enough eval work to kill it in the middle: 40 problems x 16 samples, one problem per part
EVAL = [*TINY, "dataset.op='+'", "dataset.n_test=40", "warmup.max_steps=150", "warmup.learning_rate=3e-3",
        "eval.pool_size=16", "eval.budgets=[1,4,16]", "eval.problems_per_part=1", "hardware.num_threads=1"]


def _cmd(args, run_dir, nproc=1):
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                   str(nproc), "--master_port", str(29700 + os.getpid() % 200)]
    return [*launcher, "-m", "cat_experiments.main", *args, f"hydra.run.dir={run_dir}"]


def _run(args, run_dir, nproc=1):
    out = subprocess.run(_cmd(args, run_dir, nproc), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout + out.stderr


def _kill_after_parts(args, run_dir, samples: Path, parts: int, nproc=1) -> int:
    """Start the command and SIGKILL its whole process group once ``parts`` parts are stored."""
    proc = subprocess.Popen(_cmd(args, run_dir, nproc), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(samples.rglob("part-*.jsonl"))) >= parts:
            os.killpg(proc.pid, signal.SIGKILL)
            # torchrun's workers may run in sessions of their own: every process of this run dir
            subprocess.run(["pkill", "-KILL", "-f", f"hydra.run.dir={run_dir}"], check=False)
            break
        time.sleep(0.05)
    proc.wait()
    time.sleep(1)
    assert subprocess.run(["pgrep", "-f", f"hydra.run.dir={run_dir}"], capture_output=True).returncode == 1
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return len({json.loads(line)["problem_id"] for p in samples.rglob("part-*.jsonl") for line in p.open()})


@pytest.mark.slow
def test_kill_during_evaluation_and_resume_gives_the_uninterrupted_curves(tmp_path):
    cache = tmp_path / "cache"
    args = [*EVAL, f"cache_dir={cache}", "baseline=false", "eval.eval_warmup=false"]
    _run([*args, "stage=train"], tmp_path / "train")
    samples = cache / "samples"
    _run([*args, "stage=eval"], tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert whole["branches"]["cat"]["pass@k"]["16"] > 0.1  # curves that carry information
    for nproc in (1, 2):
        shutil.rmtree(samples)
        stored = _kill_after_parts([*args, "stage=eval"], tmp_path / f"killed{nproc}", samples, parts=12, nproc=nproc)
        assert 0 < stored < 40
        log = _run([*args, "stage=eval"], tmp_path / f"resumed{nproc}", nproc=nproc)
        found = re.search(r"\[eval:cat\] (\d+) of 40 problems already stored", log)
        assert found and int(found.group(1)) == stored, log[-2000:]
        resumed = json.loads((tmp_path / f"resumed{nproc}" / "results.json").read_text())
        assert resumed["branches"] == whole["branches"], nproc
        assert resumed["stderr"] == whole["stderr"]


@pytest.mark.slow
def test_stage_eval_never_trains_and_a_run_regrades_in_one_command(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, f"cache_dir={cache}"]
    out = subprocess.run(_cmd([*args, "stage=eval"], tmp_path / "e"), cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2
    assert "stage=eval evaluates trained checkpoints and trains nothing" in out.stderr
    assert str(cache / "warmup") in out.stderr and "branch 'cat'" in out.stderr
    assert not (cache / "warmup").exists() and not (cache / "models").exists()  # nothing built or trained
    _run(args, tmp_path / "run")
    before = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(before["samples"]) == {"warmup", "standard", "cat"}
    assert before["sampling"]["pool_size"] == 4 and before["provenance"]["versions"]["torch"]
    assert (tmp_path / "run" / "per_problem.json").exists()
    for entry in [*cache.glob("models/*/"), *cache.glob("warmup/*/"), *cache.glob("branches/*/"), *cache.glob("samples/*/")]:
        assert json.loads((entry / "key.json").read_text())["version"] >= 2, entry
    # new budgets: stage=eval samples nothing
    log = _run([*args, "stage=eval", "eval.budgets=[1,4]"], tmp_path / "budgets")
    assert log.count("16 of 16 problems already stored") == 3
    # one command regrades the finished run in place
    regrade = subprocess.run([sys.executable, "-m", "cat_experiments.regrade", str(tmp_path / "run"), "eval.budgets=[1,2]"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert regrade.returncode == 0, regrade.stderr[-3000:]
    after = json.loads((tmp_path / "run" / "results.json").read_text())
    assert after["branches"]["cat"]["pass@k"] == {k: before["branches"]["cat"]["pass@k"][k] for k in ("1", "2")}
    assert list((tmp_path / "run").glob("results.*.json"))  # the previous record is kept
    bad = subprocess.run([sys.executable, "-m", "cat_experiments.regrade", str(tmp_path / "run"), "eval.temperature=2"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "regrade takes scoring settings only" in bad.stderr
