"""Several processes on CPU: torchrun --nproc_per_node 2 on the gloo backend (and submitit's local
launcher with two tasks), against one process on the same config and cache.

- one results.json, written by the main rank;
- the sharded evaluation gives exactly the curves of one process for the same checkpoints;
- two processes x batch B/2 train the same SFT model as one process x batch B (hardware.keep_global_batch);
- a CAT GRPO branch trains on two processes (prompt groups straddle them).
- the process group is destroyed at exit, before interpreter finalization.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, TINY_RL

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS"):
    ENV.pop(var, None)

# Enough training for non-zero curves (an all-zero curve would make "equal" prove nothing).
LEARNS = [*TINY, "dataset.op='+'", "dataset.n_train=4000", "dataset.n_test=24", "warmup.max_steps=400", "warmup.learning_rate=3e-3",
          "warmup.per_device_train_batch_size=64",
          "objective.max_steps=10", "model.n_embd=64", "model.n_head=2", "model.n_layer=2", "eval.pool_size=16",
          "eval.budgets=[1,4,16]", "hardware.num_threads=1"]


def _launcher(nproc: int) -> list[str]:
    return ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
             "--master_port", str(29500 + os.getpid() % 1000)] if nproc > 1 else [sys.executable])


def _run(args: list[str], tmp: Path, name: str, nproc: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([*_launcher(nproc), "-m", "cat_experiments.main", *args, f"hydra.run.dir={tmp / name}"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_two_processes_train_and_evaluate_as_one(tmp_path):
    """2-process pipeline (warmup, SFT branches, eval): one results.json; then stage=eval on 1 process, and
    again on 2, over the same checkpoints (eval caches removed) gives exactly the same curves."""
    args = [*LEARNS, f"cache_dir={tmp_path / 'cache'}"]
    _run(args, tmp_path, "two", nproc=2)
    found = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("results.json"))
    assert found == [Path("two/results.json")]
    two = _results(tmp_path / "two")
    assert min(two["branches"][b]["pass@k"]["16"] for b in two["branches"]) > 0.3  # curves carry information
    assert max(two["branches"][b]["maj@k"]["4"] for b in two["branches"]) > 0.05
    evals = list((tmp_path / "cache").rglob("eval-*.json"))
    assert len(evals) == 3
    for p in evals:
        p.unlink()
    _run([*args, "stage=eval"], tmp_path, "one_eval")
    one = _results(tmp_path / "one_eval")
    assert one["branches"] == two["branches"]
    for p in evals:  # and stage=eval on 2 processes over the same checkpoints
        p.unlink()
    _run([*args, "stage=eval"], tmp_path, "two_eval", nproc=2)
    assert _results(tmp_path / "two_eval")["branches"] == one["branches"]


def test_two_processes_x_half_batch_train_the_same_sft_model_as_one(tmp_path):
    """Warmup (CE, token mean) and a CAT Pass@N branch (sequence mean): 2 x B/2 == 1 x B."""
    args = [*TINY, *["warmup.max_steps=4", "objective.max_steps=3", "objective.reduction=sequence_mean",
                     "strategy.n=4", "baseline=false", "stage=train", "hardware.num_threads=1"]]
    _run([*args, f"cache_dir={tmp_path / 'c1'}"], tmp_path, "one")
    _run([*args, f"cache_dir={tmp_path / 'c2'}"], tmp_path, "two", nproc=2)
    finals = {}
    for cache in ("c1", "c2"):
        finals[cache] = sorted(p.parent for p in (tmp_path / cache).rglob("final/model.safetensors"))
    # the same cache keys: the global batch is kept, the process count is not part of the key
    assert [p.relative_to(tmp_path / "c1") for p in finals["c1"]] == [p.relative_to(tmp_path / "c2") for p in finals["c2"]]
    assert len(finals["c1"]) == 2  # warmup and the CAT branch
    init = _weights(Path(next((tmp_path / "c1" / "models").iterdir())))
    for a, b in zip(finals["c1"], finals["c2"], strict=True):
        wa, wb = _weights(a), _weights(b)
        moved = max((wa[k] - init[k]).abs().max().item() for k in init if k in wa)
        assert moved > 1e-3  # training changed the weights
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=f"{a.parent.name}: {k}")


def test_cat_grpo_branch_on_two_processes(tmp_path):
    """Majority CAT with the dynamic threshold: 8 completions per step = 2 prompts x 4, 4 per process,
    so a prompt's group lies on one process or the other; the weights need every process's scores."""
    args = [*TINY, *TINY_RL, "objective=rl", "strategy=majority", "strategy.n=4", "strategy.k=null",
            "objective.max_steps=3", "baseline=false", "eval.pool_size=4", f"cache_dir={tmp_path / 'cache'}",
            "hardware.num_threads=1"]
    _run(args, tmp_path, "rl", nproc=2)
    res = _results(tmp_path / "rl")
    assert set(res["branches"]) == {"warmup", "cat"}
    stats = res["train_stats"]["cat"]
    assert "cat_weight/mean/last" in stats and stats["cat_weight/mean/last"] >= 0


def test_the_process_group_is_destroyed_before_interpreter_exit(tmp_path):
    """dist.init registers an exit handler that destroys the group (a gloo group left to interpreter
    finalization can abort a rank). A handler registered before init runs after it (last in, first out)."""
    script = tmp_path / "exit.py"
    script.write_text("import atexit, torch.distributed as td\n"
                      "atexit.register(lambda: print('group at exit:', td.is_initialized(), flush=True))\n"
                      "from cat_experiments import distributed as dist\n"
                      "dist.init(cpu=True); dist.init(cpu=True)\n"
                      "assert td.is_initialized() and dist.world_size() == 2\n")
    out = subprocess.run([*_launcher(2), str(script)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("group at exit: False") == 2, out.stdout


def test_submitit_local_job_with_two_tasks_runs_distributed(tmp_path):
    """The SLURM path on CPU: Hydra's submitit launcher, one job of two tasks; torch.distributed is set up
    from the job environment (submitit's helper) and the main task writes the one results.json."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "-m", "cat_experiments.main", "-m", *TINY, "hardware.num_threads=1",
                          f"cache_dir={tmp_path / 'cache'}", "hydra/launcher=submitit_local",
                          "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text() for p in sweep.rglob("*.log*") if p.is_file())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:] + logs[-4000:]
    assert len(list(sweep.rglob("results.json"))) == 1
    assert "rank 1 of 2" in logs and "rank 0 of 2" in logs
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
