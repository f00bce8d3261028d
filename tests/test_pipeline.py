"""End to end on the embedded default, shrunk: every strategy/objective, multirun + report,
bad input, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, TINY_RL, compose

from cat_experiments.main import run
from cat_experiments.records import load_results

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("overrides", [
    ["strategy=pass_at_n", "objective=sft"],
    ["strategy=standard"],
    ["strategy=majority", "objective=sft"],
    ["strategy=majority", "objective=rl", "strategy.k=null", "objective.all_wrong_penalty=0.5", *TINY_RL],
    ["strategy=pass_at_n", "objective=rl", *TINY_RL],
    ["strategy=pass_at_n", "objective=rl", "strategy.p_estimator=unbiased", "strategy.weight_form=raw",
     "strategy.n=4", *TINY_RL],
    ["strategy=best_of_n", "objective=rl", *TINY_RL],
])
def test_pipeline_runs_end_to_end(overrides, tmp_path):
    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}", *overrides])
    results = run(cfg, run_dir=tmp_path / "run")
    expected = {"warmup", "standard"} if cfg.strategy.name == "standard" else {"warmup", "standard", "cat"}
    assert set(results["branches"]) == expected
    for curves in results["branches"].values():
        assert set(curves) == {"pass@k", "maj@k"}
        assert sorted(curves["pass@k"]) == [1, 2, 4]
        assert all(0.0 <= v <= 1.0 for c in curves.values() for v in c.values())
        assert curves["pass@k"][1] <= curves["pass@k"][4]
    for name in ("results.json", "scaling.csv", "scaling.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    saved = load_results(tmp_path / "run" / "results.json")
    assert saved["strategy"] == cfg.strategy.name and saved["target_n"] == cfg.strategy.n and saved["seed"] == 0


def test_rerun_reuses_warmup_and_branches(tmp_path, caplog):
    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}"])
    first = run(cfg, run_dir=tmp_path / "a")
    caplog.set_level("INFO", logger="cat_experiments")
    second = run(compose([*TINY, f"cache_dir={tmp_path / 'cache'}", "strategy.n=4"]), run_dir=tmp_path / "b")
    text = caplog.text
    assert "[warmup] cached" in text and "[train:standard] cached" in text
    # N=4 is a new CAT branch: trained afresh (its log line, as pipeline.py writes it), not taken from the cache
    assert "[train:cat] sft pass_at_n(n=4), 4 steps -> " in text
    assert "[train:cat] cached" not in text
    assert second["branches"]["warmup"] == first["branches"]["warmup"]
    assert second["branches"]["standard"] == first["branches"]["standard"]


def test_stage_eval_without_training_names_the_problem(tmp_path):
    cfg = compose([*TINY, f"cache_dir={tmp_path / 'cache'}", "stage=eval", "warmup.enabled=false"])
    with pytest.raises(FileNotFoundError, match="stage=train"):
        run(cfg, run_dir=tmp_path / "run")


def cli(args, cwd, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "cat_experiments.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.parametrize("args,needle", [
    (["strategy.name=pass_at"], "strategy.name='pass_at'"),
    (["strategy.n=0"], "strategy.n=0"),
    (["strategy=majority", "strategy.k=12"], "strategy.k=12"),
    (["strategy=pass_at_m"], "pass_at_m"),
])
def test_cli_rejects_bad_config_before_any_work(args, needle, tmp_path):
    out = cli([*args, f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT)
    assert out.returncode != 0
    assert needle in out.stderr + out.stdout
    assert not (tmp_path / "warmup").exists()


def test_multirun_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "strategy=standard,pass_at_n,majority", *TINY, f"cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}"]
    out = cli(args, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(sweep.glob("*/results.json"))) == 3
    rep = subprocess.run([sys.executable, "-m", "cat_experiments.report", str(sweep)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "pass_at_n(N=32)" in rep.stdout and "majority(N=8)" in rep.stdout and "standard" in rep.stdout
    for name in ("report.md", "report.csv", "report.png"):
        assert (sweep / name).exists()


def test_kill_mid_training_then_resume_matches_uninterrupted(tmp_path):
    common = [*TINY, "objective.max_steps=12", "objective.save_steps=3", "strategy.n=4", "logger=none"]
    ref = cli([*common, f"cache_dir={tmp_path / 'ref'}", f"hydra.run.dir={tmp_path / 'ref_run'}"], cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-3000:]

    cache = tmp_path / "cache"
    args = [*common, f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run1'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cat_experiments.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith("cat-") and list(p.glob("checkpoint-6/trainer_state.json"))
               for p in (cache / "branches").glob("*")):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "the run finished before it could be killed; make it longer"
    cat_dirs = [p for p in (cache / "branches").glob("cat-*")]
    assert cat_dirs and not (cat_dirs[0] / "final" / "DONE").exists()

    again = cli([*common, f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run2'}"], cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "[warmup] cached" in log and "resuming" in log
    a = json.loads((tmp_path / "ref_run" / "results.json").read_text())["branches"]
    b = json.loads((tmp_path / "run2" / "results.json").read_text())["branches"]
    assert a == b


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in TINY if o != "logger=none"]
    cfg = compose([*overrides, "logger=wandb", f"cache_dir={tmp_path / 'cache'}"])
    run(cfg, run_dir=tmp_path / "run")
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
