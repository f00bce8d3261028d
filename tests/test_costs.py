"""The plan's cost: tokens per stage and GPU-hours (costs.py), and the MATH presets' plans offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from cat_experiments.costs import format_costs, grid_size, job_costs


def _plan(objective="rl"):
    branch = ({"objective": "sft", "optimizer_steps": 10, "examples_per_step": 4} if objective == "sft" else
              {"objective": "rl", "rollouts": 1000, "max_completion_length": 50, "max_generated_tokens": 50_000})
    return {
        "tokens": {"per_example": 100.0, "prompt": 30.0},
        "warmup": {"enabled": True, "optimizer_steps": 100, "examples_per_step": 8},
        "branches": {"standard": dict(branch), "cat": dict(branch)},
        "eval": {"models": ["warmup", "standard", "cat"], "samples_per_model": 2000, "max_new_tokens": 36},
    }


def test_job_costs_by_hand():
    rates = {"hf": 100.0, "vllm": 1000.0, "train": 400.0}
    stages = job_costs(_plan(), rates, eval_engine="vllm", rl_engine="hf")
    assert stages["warmup"]["tokens_trained"] == 100 * 8 * 100
    assert stages["warmup"]["gpu_hours"] == pytest.approx(80_000 / 400 / 3600)
    cat = stages["branch cat"]
    assert cat["tokens_generated"] == 50_000 and cat["tokens_trained"] == 1000 * (30 + 50)
    assert cat["gpu_hours"] == pytest.approx((50_000 / 100 + 80_000 / 400) / 3600)
    assert stages["eval cat"]["gpu_hours"] == pytest.approx(72_000 / 1000 / 3600)
    assert [n for n, c in stages.items() if not c["shared"]] == ["branch cat", "eval cat"]
    lines = format_costs(stages, rates, jobs=3, seeds=1)
    job = sum(c["gpu_hours"] for c in stages.values())
    unique = stages["branch cat"]["gpu_hours"] + stages["eval cat"]["gpu_hours"]
    assert lines[-2].endswith(f"this job: {job:.2f} GPU-h")
    assert lines[-1].endswith(f"{(job - unique) + 3 * unique:.2f} GPU-h")


def test_missing_throughput_or_data_says_what_to_set():
    stages = job_costs(_plan("sft"), {"hf": 100.0}, eval_engine="hf", rl_engine="hf")
    text = "\n".join(format_costs(stages, {"hf": 100.0}))
    assert "this job: ? GPU-h" in text and "hardware.throughput.train" in text
    plan = _plan("sft")
    plan["tokens"] = {"per_example": None, "prompt": None}
    text = "\n".join(format_costs(job_costs(plan, {"hf": 1.0, "train": 1.0}, "hf", "hf"), {"hf": 1.0, "train": 1.0}))
    assert "train ? tokens" in text and "dataset.tokens_per_example" in text


def test_grid_size_reads_hydra_sweeps():
    assert grid_size(None) == (1, 1)
    assert grid_size({"strategy.n": "4,16"}) == (2, 1)
    assert grid_size({"+branch": "maj8k3,maj16k4,maj64k26"}) == (3, 1)
    assert grid_size({"strategy.n": "4,16", "seed": "0,1,2"}) == (6, 3)
    assert grid_size({"seed": "range(5)", "strategy.n": "8"}) == (5, 5)


@pytest.mark.parametrize("preset,test_rows,jobs", [("math_passn_sft", 500, 3), ("math_majority_sft", 2462, 3),
                                                   ("math_passn_rl", 500, 2), ("math_majority_rl", 2462, 2)])
def test_math_presets_plan_their_gpu_hours_offline(preset, test_rows, jobs, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cat_experiments.main", f"experiment={preset}", "dry_run=true",
                          f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{test_rows} test rows" in out.stdout
    job = re.search(r"this job: ([\d,.]+) GPU-h", out.stdout)
    grid = re.search(rf"the grid \({jobs} jobs of the preset's sweep.*: ([\d,.]+) GPU-h", out.stdout)
    assert job and grid, out.stdout
    assert float(grid.group(1).replace(",", "")) > float(job.group(1).replace(",", ""))


def test_plan_warns_when_a_job_outlasts_the_launchers_time_limit():
    stages = job_costs(_plan(), {"hf": 100.0, "vllm": 1000.0, "train": 400.0}, eval_engine="vllm", rl_engine="hf")
    job = sum(c["gpu_hours"] for c in stages.values())  # ~0.53 GPU-h
    rates = {"hf": 100.0, "vllm": 1000.0, "train": 400.0}
    warned = "\n".join(format_costs(stages, rates, timeout_min=30))
    assert "warning: this job needs" in warned and "hydra.launcher.timeout_min=30" in warned
    assert "warning" not in "\n".join(format_costs(stages, rates, timeout_min=int(job * 60) + 1))
    assert "warning" not in "\n".join(format_costs(stages, rates, processes=2, timeout_min=30))  # ~0.27 h each
    assert "warning" not in "\n".join(format_costs(stages, rates))  # no launcher, no limit


def test_dry_run_reads_the_time_limit_from_hydras_launcher(tmp_path):
    def plan(minutes):
        return subprocess.run([sys.executable, "-m", "cat_experiments.main", "experiment=math_majority_sft",
                               "dry_run=true", "hydra/launcher=slurm", f"hydra.launcher.timeout_min={minutes}",
                               f"hydra.run.dir={tmp_path / f'run{minutes}'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

    short, long = plan(60), plan(100 * 24 * 60)
    assert short.returncode == 0 and long.returncode == 0, short.stderr[-3000:] + long.stderr[-3000:]
    assert "warning: this job needs" in short.stdout and "hydra.launcher.timeout_min=60 " in short.stdout
    assert "warning" not in long.stdout
