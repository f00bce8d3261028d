"""Sample one pool of ``m`` candidate completions per prompt with HF ``model.generate``.

The prompts are fully formatted strings (the caller applies chat templates). Each pool holds the decoded
text of the *new* tokens only (special tokens skipped). Generation is batched so that one ``generate``
call produces at most ``batch_size`` sequences: several prompts share a call when ``m`` is small, and a
large ``m`` is split into chunks of ``num_return_sequences``. Prompts are left-padded and grouped by
length (less padding); the pools come back in the order of ``prompts``.

Sampling is pure ancestral sampling at ``temperature`` with optional nucleus (``top_p < 1``) and top-k
(``top_k > 0``) truncation; the other logits processors a checkpoint's ``generation_config`` may set
(repetition penalty, typical-p, ...) are switched off so that the pools follow the stated distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["sample_pools", "plan_batches", "num_generate_calls"]

# Generation options set to their neutral value so that a checkpoint's generation_config cannot
# silently change the sampling distribution (these are filled from model.generation_config when unset).
_NEUTRAL_GENERATION = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_length": 0,
    "num_beams": 1,
}


def plan_batches(lengths: Sequence[int], m: int, batch_size: int) -> list[tuple[list[int], int]]:
    """Split the work into ``generate`` calls: a list of ``(prompt indices, sequences per prompt)``.

    At most ``batch_size`` sequences per call: ``batch_size // m`` prompts with all ``m`` samples each
    when ``m <= batch_size``, else one prompt per call with ``m`` split into chunks of ``batch_size``
    (the last one smaller). Prompts are taken in order of token length (stable), so a call pads little.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    plan: list[tuple[list[int], int]] = []
    if m <= batch_size:
        per_call = max(1, batch_size // m)
        for start in range(0, len(order), per_call):
            plan.append((order[start : start + per_call], m))
    else:
        for i in order:
            for start in range(0, m, batch_size):
                plan.append(([i], min(batch_size, m - start)))
    return plan


def _eos_ids(tokenizer: Any, model: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """The stop tokens: the explicit ``eos_token_id``, else the tokenizer's EOS plus any the model's
    generation_config lists (chat checkpoints often stop on an end-of-turn token too)."""
    if eos_token_id is not None:
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    else:
        ids = []
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        gc = getattr(model, "generation_config", None)
        extra = getattr(gc, "eos_token_id", None) if gc is not None else None
        if extra is not None:
            ids.extend([extra] if isinstance(extra, int) else list(extra))
    out: list[int] = []
    for i in ids:
        if int(i) not in out:
            out.append(int(i))
    return out


def sample_pools(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    m: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "sampling",
    add_special_tokens: bool = False,
    eos_token_id: int | Sequence[int] | None = None,
    progress: bool = True,
) -> list[list[str]]:
    """Sample ``m`` completions for every prompt; returns ``len(prompts)`` pools of ``m`` strings each.

    Args:
        model: a causal LM (``model.generate``); inputs go to ``model.device``. Its training mode is
            restored afterwards.
        tokenizer: the matching tokenizer. ``padding_side`` is ``"left"`` during the call and restored.
        prompts: fully formatted prompt strings.
        m: pool size (samples per prompt).
        max_new_tokens: generation length limit.
        temperature: softmax temperature (> 0).
        top_p: nucleus threshold; 1.0 disables it.
        top_k: top-k truncation; 0 disables it.
        batch_size: the most sequences one ``generate`` call produces (see :func:`plan_batches`).
        seed: the pools are a deterministic function of ``seed`` (and of the batching). The global
            torch RNG state is saved and restored, so sampling does not perturb a training run.
        desc: progress-bar label (the bar counts sequences).
        add_special_tokens: passed to the tokenizer (False: the prompt already holds its specials).
        eos_token_id: stop token(s); default the tokenizer's EOS plus the model's generation_config EOS.
        progress: show the tqdm bar.
    """
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got max_new_tokens={max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got temperature={temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got top_p={top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = disabled), got top_k={top_k}")
    if not prompts:
        return []

    eos = _eos_ids(tokenizer, model, eos_token_id)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        if not eos:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token")
        pad_id = eos[0]

    old_side = tokenizer.padding_side
    was_training = bool(getattr(model, "training", False))
    device = model.device
    devices = [device] if device.type == "cuda" else []
    pools: list[list[str]] = [[] for _ in prompts]
    try:
        tokenizer.padding_side = "left"
        model.eval()
        encoded = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
        for i, ids in enumerate(encoded):
            if len(ids) == 0:
                raise ValueError(f"prompt {i} tokenizes to zero tokens: {prompts[i]!r}")
        gen_kwargs: dict[str, Any] = dict(_NEUTRAL_GENERATION)
        gc = getattr(model, "generation_config", None)
        if getattr(gc, "min_p", None) is not None:
            gen_kwargs["min_p"] = 0.0
        gen_kwargs.update(
            do_sample=True,
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            max_new_tokens=int(max_new_tokens),
            pad_token_id=pad_id,
            eos_token_id=eos if len(eos) != 1 else eos[0],
        )
        plan = plan_batches([len(ids) for ids in encoded], m, batch_size)
        with (
            torch.random.fork_rng(devices=devices),
            torch.no_grad(),
            tqdm(total=len(prompts) * m, desc=desc, unit="seq", mininterval=2, disable=not progress) as bar,
        ):
            torch.manual_seed(seed)
            for idxs, n_ret in plan:
                width = max(len(encoded[i]) for i in idxs)
                input_ids = torch.full((len(idxs), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(idxs), width), dtype=torch.long)
                for row, i in enumerate(idxs):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention[row, width - len(ids) :] = 1
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    num_return_sequences=n_ret,
                    **gen_kwargs,
                )
                new_tokens = out[:, width:].cpu().tolist()
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                # generate returns the n_ret samples of each prompt contiguously
                for row, i in enumerate(idxs):
                    pools[i].extend(texts[row * n_ret : (row + 1) * n_ret])
                bar.update(len(texts))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    for i, pool in enumerate(pools):
        if len(pool) != m:  # pragma: no cover - a generate() contract violation
            raise RuntimeError(f"prompt {i}: expected {m} samples, got {len(pool)}")
    return pools


def num_generate_calls(num_prompts: int, m: int, batch_size: int) -> int:
    """How many ``generate`` calls :func:`sample_pools` makes (for sizing runs)."""
    if m <= batch_size:
        return math.ceil(num_prompts / max(1, batch_size // m))
    return num_prompts * math.ceil(m / batch_size)
