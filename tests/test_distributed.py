"""Several processes on CPU: torchrun --nproc_per_node 2 on the gloo backend (and submitit's local
launcher with two tasks), against one process on the same config and cache.

- one results.json, written by the main rank;
- the sharded evaluation gives exactly the curves of one process for the same checkpoints;
- two processes x batch B/2 train the same SFT model as one process x batch B (hardware.keep_global_batch);
- a CAT GRPO branch trains on two processes (prompt groups straddle them), and the CAT post-processing
  gives straddling groups exactly the advantages and weights of one process.
- the process group is destroyed at exit, before interpreter finalization.
"""

from __future__ import annotations

import json
import os
import re
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
    samples = tmp_path / "cache" / "samples"
    assert len(list(samples.glob("*/key.json"))) == 3  # warmup, standard and CAT pools, stored
    # parts written by both ranks (a shard each), one row per problem
    assert {p.name.split("-")[2] for p in samples.rglob("part-*.jsonl")} == {"r0", "r1"}
    shutil.rmtree(samples)
    _run([*args, "stage=eval"], tmp_path, "one_eval")
    one = _results(tmp_path / "one_eval")
    assert one["branches"] == two["branches"]
    shutil.rmtree(samples)  # and stage=eval on 2 processes over the same checkpoints
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
    init = _weights(next(p for p in (tmp_path / "c1" / "models").iterdir() if p.is_dir()))  # not its .lock
    for a, b in zip(finals["c1"], finals["c2"], strict=True):
        wa, wb = _weights(a), _weights(b)
        moved = max((wa[k] - init[k]).abs().max().item() for k in init if k in wa)
        assert moved > 1e-3  # training changed the weights
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=f"{a.parent.name}: {k}")


def test_cat_grpo_branch_on_two_processes(tmp_path):
    """Majority CAT with the dynamic threshold through TRL's GRPOTrainer: 8 completions per step = 1 prompt
    x 8, 4 per process, so every prompt's group straddles the processes (the weights need both processes'
    scores; test_grpo_groups_straddling_two_processes_get_the_one_process_weights checks their values)."""
    rl = [o for o in TINY_RL if not o.startswith("objective.num_generations=")]
    args = [*TINY, *rl, "objective.num_generations=8", "objective=rl", "strategy=majority", "strategy.n=4",
            "strategy.k=null",
            "objective.max_steps=3", "baseline=false", "eval.pool_size=4", f"cache_dir={tmp_path / 'cache'}",
            "hardware.num_threads=1"]
    _run(args, tmp_path, "rl", nproc=2)
    res = _results(tmp_path / "rl")
    assert set(res["branches"]) == {"warmup", "cat"}
    stats = res["train_stats"]["cat"]
    assert "cat_weight/mean/last" in stats and stats["cat_weight/mean/last"] >= 0


STRADDLE = """
import json, sys
from collections import defaultdict
import torch
from trl import GRPOTrainer
from cat_experiments import distributed as dist
from cat_experiments.strategies import build_strategy
from cat_experiments.tasks.base import Score
from cat_experiments.training.rl import CatGRPOTrainer, TaskReward

out, per_process, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
state = dist.init(cpu=True)
rank, world = dist.rank(), dist.world_size()
assert world * per_process % m == 0
# the global batch as TRL lays it out: prompt g's m rollouts are rows g*m .. g*m+m-1, and process r holds
# rows r*per_process .. (r+1)*per_process-1, so a group straddles processes when per_process % m != 0
n = world * per_process
gen = torch.Generator().manual_seed(0)
rewards = torch.rand(n, generator=gen, dtype=torch.float64)
correct = torch.rand(n, generator=gen) < 0.2
keys = [str(k) for k in torch.randint(0, 3, (n,), generator=gen).tolist()]
scores = [Score(float(r), bool(c), k) for r, c, k in zip(rewards, correct, keys)]
grouped = rewards.view(-1, m)  # TRL's group-normalised advantages, from the gathered rewards
trl_adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)
local = slice(rank * per_process, (rank + 1) * per_process)


def stock(self, inputs):  # stands in for TRL's generation and scoring
    self.task_reward.last_scores = scores[local]
    return {"advantages": trl_adv[local].float().clone()}


GRPOTrainer._generate_and_score_completions = stock
STRATEGIES = {"pass_at_n_laplace": dict(name="pass_at_n", n=4, p_estimator="laplace", weight_form="log"),
              "pass_at_n_unbiased": dict(name="pass_at_n", n=4, p_estimator="unbiased", weight_form="raw"),
              "majority_dynamic_k": dict(name="majority", n=4, k=None, weight_form="raw"),
              "majority_loo": dict(name="majority", n=4, k=None, estimator="loo"),
              "best_of_n": dict(name="best_of_n", n=4, q_estimator="group")}
result = {}
for name, cfg in STRATEGIES.items():
    trainer = object.__new__(CatGRPOTrainer)  # the real post-processing; TRL's part stubbed above
    trainer.strategy, trainer.all_wrong_penalty, trainer.advantage_clip = build_strategy(cfg), 0.5, None
    trainer.task_reward, trainer.num_generations, trainer.num_generations_eval = TaskReward(None), m, m
    trainer.accelerator = type("Acc", (), {"process_index": rank})()
    trainer.model = torch.nn.Linear(1, 1).train()
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    adv = trainer._generate_and_score_completions({})["advantages"]
    result[name] = {"advantages": adv.tolist(), "metrics": dict(trainer._metrics["train"])}
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(result, fh)
"""


def test_grpo_groups_straddling_two_processes_get_the_one_process_weights(tmp_path):
    """GRPO groups of 8 rollouts over 2 processes x 12 rollouts (the second group straddles them): the CAT
    post-processing (training/rl.py, after TRL's advantages) gathers every process's scores, so each
    process's advantages and the logged CAT weights are exactly those of one process holding all 24."""
    script = tmp_path / "straddle.py"
    script.write_text(STRADDLE)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    for nproc, out, per_process in ((1, "one", 24), (2, "two", 12)):
        run = subprocess.run([*_launcher(nproc), str(script), str(tmp_path / out), str(per_process), "8"], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert set(one) == {"pass_at_n_laplace", "pass_at_n_unbiased", "majority_dynamic_k", "majority_loo", "best_of_n"}
    for name, res in one.items():
        joined = two[0][name]["advantages"] + two[1][name]["advantages"]
        assert len(joined) == 24 and joined == pytest.approx(res["advantages"], abs=1e-6), name
        for r in (0, 1):  # every process logs the weights of the whole gathered batch
            assert two[r][name]["metrics"].keys() == res["metrics"].keys(), (name, r)
            for key, values in res["metrics"].items():
                assert two[r][name]["metrics"][key] == pytest.approx(values, abs=1e-12), (name, r, key)
        assert res["metrics"]["all_wrong_frac"] == [pytest.approx(1 / 3)]  # one group of 3: the penalty is used
        weights = res["metrics"].get("cat_weight/mean")
        assert weights and (name == "majority_loo" or weights[0] != pytest.approx(1.0)), name  # not a no-op


def test_the_process_group_is_destroyed_before_interpreter_exit(tmp_path):
    """dist.init registers an exit handler that destroys the group (a gloo group left to interpreter
    finalization can abort a rank). A handler registered before init runs after it (last in, first out)."""
    script = tmp_path / "exit.py"
    # each rank writes its own file: two ranks printing to one stdout can interleave their lines
    script.write_text("import atexit, os, torch.distributed as td\n"
                      f"out = {str(tmp_path)!r} + '/rank' + os.environ['RANK']\n"
                      "atexit.register(lambda: open(out, 'w').write(f'group at exit: {td.is_initialized()}'))\n"
                      "from cat_experiments import distributed as dist\n"
                      "dist.init(cpu=True); dist.init(cpu=True)\n"
                      "assert td.is_initialized() and dist.world_size() == 2\n")
    out = subprocess.run([*_launcher(2), str(script)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["group at exit: False"] * 2


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


FAILING = """
import sys, time
from hydra import compose, initialize_config_dir
from cat_experiments import distributed as dist
from cat_experiments.config import register_configs
from cat_experiments.main import run
from cat_experiments.pipeline import Pipeline

conf, tmp, failing = sys.argv[1], sys.argv[2], int(sys.argv[3])


def pipeline_run(self, stage=None):
    if dist.rank() == failing:
        time.sleep(2)
        print(f"failing at {time.time()}", flush=True)
        raise RuntimeError(f"injected failure on rank {failing}")
    if dist.is_main():
        time.sleep(600)  # the main rank works alone (or waits for another job's lock): in no collective
    dist.barrier()  # the others wait for it


Pipeline.run = pipeline_run
register_configs()
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose(config_name="config", overrides=["logger=none", "hardware.num_threads=1", f"cache_dir={tmp}/cache"])
run(cfg, run_dir=f"{tmp}/run")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launch,failing", [("torchrun", 1), ("tasks", 1), ("tasks", 0)])
def test_a_failing_rank_ends_every_rank_within_a_minute(tmp_path, launch, failing):
    """Rank `failing` raises while the main rank works alone (rank 1 failing) or while rank 1 waits for the
    main rank in a barrier (rank 0 failing). Under torchrun (whose agent stops the other workers) and as
    plain tasks that know only their rank, as srun starts them (no one stops the others): every rank
    exits non-zero within a minute of the failure, and the log holds the failing rank's traceback."""
    import time

    from conftest import CONF

    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    args = [str(script), str(CONF), str(tmp_path), str(failing)]
    if launch == "torchrun":
        procs = [subprocess.Popen([*_launcher(2), *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)]
    else:
        port = str(_free_port())
        procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env={**ENV, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
                 for r in range(2)]
    ended: dict[int, float] = {}
    deadline = time.time() + 400
    while len(ended) < len(procs) and time.time() < deadline:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = time.time()
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
    out = "\n".join(p.communicate()[0] for p in procs)
    assert len(ended) == len(procs), f"a rank is still running after 400 s:\n{out[-4000:]}"
    failed_at = float(re.search(r"failing at ([\d.]+)", out).group(1))
    assert all(p.returncode != 0 for p in procs), ([p.returncode for p in procs], out[-4000:])
    exit_s = max(ended.values()) - failed_at
    print(f"{launch}, rank {failing} failing: every rank ended {exit_s:.1f} s after the failure")
    assert exit_s < 60, out[-4000:]
    assert "Traceback" in out and f"RuntimeError: injected failure on rank {failing}" in out, out[-4000:]
