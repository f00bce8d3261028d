"""Sample one pool of ``m`` candidate completions per prompt with HF ``model.generate``.

The prompts are fully formatted strings (the caller applies chat templates). Each pool holds the decoded
text of the *new* tokens only (special tokens skipped). Generation is batched so that one ``generate``
call produces at most ``batch_size`` sequences: several prompts share a call when ``m`` is small, and a
large ``m`` is split into chunks. Prompts are left-padded and grouped by length (less padding); the pools
come back in the order of ``prompts``.

Sampling is ancestral sampling at ``temperature`` with optional nucleus (``top_p < 1``) and top-k
(``top_k > 0``) truncation; the other logits processors a checkpoint's ``generation_config`` may set
(repetition penalty, typical-p, ...) are switched off so that the pools follow the stated distribution.

Keyed randomness. Each token is drawn by the Gumbel-max trick, ``argmax_v (log p_v + G_v)``, which is an
exact draw from ``p``, with the Gumbel noise ``G_v`` a hash of (seed, problem id, sample index, step,
token v) instead of a stateful RNG. So a problem's pool is a function of (seed, problem id) and the
model alone: not of which prompts share a ``generate`` call, of ``batch_size``, of the order of the
prompts or of the process that samples it. That is what lets the evaluation shard problems over
processes and still give the curves of one process (up to the float rounding of the logits in
differently shaped batches, which would matter only for a near-exact tie between two perturbed logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["keyed_uniform", "sample_pools", "plan_batches", "num_generate_calls"]

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


_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (two multiply-xorshift rounds, constants from Wellons' hash
    prospector) on int64 tensors holding values in [0, 2^32); the constants are < 2^31, so no product
    overflows int64."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def keyed_uniform(seed: int, problem_ids: torch.Tensor, sample_ids: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniforms in (0, 1), float64, shape ``[rows, vocab]``: entry (r, v) is a hash of
    (seed, problem_ids[r], sample_ids[r], step, v), 53 random bits each."""
    device = problem_ids.device
    h = _mix32(torch.tensor([(seed & _M32) ^ 0x5BD1E995], dtype=torch.int64, device=device))
    h = _mix32(h ^ ((seed >> 32) & _M32))
    h = _mix32(h ^ (problem_ids.to(torch.int64) & _M32))
    h = _mix32(h ^ (sample_ids.to(torch.int64) & _M32))
    h = _mix32(h ^ (int(step) & _M32))
    tokens = torch.arange(vocab, dtype=torch.int64, device=device)
    a = _mix32(h[:, None] ^ tokens[None, :])
    b = _mix32(a ^ 0x68E31DA4)
    bits = (a << 21) | (b >> 11)  # 53 bits
    return (bits.to(torch.float64) + 0.5) / float(2**53)


class _KeyedSampler:
    """A logits processor for *greedy* ``generate``: warps the logits as sampling would (temperature,
    top-k, top-p, in HF's order) and adds keyed Gumbel noise, so the argmax is a draw from the warped
    distribution whose randomness is a function of (seed, problem, sample, step, token)."""

    def __init__(self, seed: int, problem_ids: torch.Tensor, sample_ids: torch.Tensor, width: int,
                 temperature: float, top_k: int, top_p: float):
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.seed, self.problem_ids, self.sample_ids, self.width = seed, problem_ids, sample_ids, width
        self.warpers = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(float(temperature)))
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(int(top_k)))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(float(top_p)))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        u = keyed_uniform(self.seed, self.problem_ids, self.sample_ids, input_ids.shape[1] - self.width,
                          scores.shape[-1])
        gumbel = -torch.log(-torch.log(u))
        return scores + gumbel.to(scores.dtype)  # -inf (truncated) stays -inf


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


def eos_ids(tokenizer: Any, model: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
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
    problem_ids: Sequence[int] | None = None,
    details: bool = False,
) -> list[list[str]] | list[list[dict[str, Any]]]:
    """Sample ``m`` completions for every prompt; returns ``len(prompts)`` pools of ``m`` strings each
    (with ``details``: dicts ``{"text", "num_tokens", "finish_reason"}``, the tokens generated up to and
    including the stop token, and "stop" or "length").

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
        seed: with ``problem_ids``, the key of the pools: pool i is a deterministic function of
            (seed, problem_ids[i]) and the model, whatever the batching. The global torch RNG is not used.
        desc: progress-bar label (the bar counts sequences).
        add_special_tokens: passed to the tokenizer (False: the prompt already holds its specials).
        eos_token_id: stop token(s); default the tokenizer's EOS plus the model's generation_config EOS.
        progress: show the tqdm bar.
        problem_ids: one non-negative integer per prompt naming its problem (default ``0..len-1``); the
            sharded evaluation passes the problems' global indices.
    """
    prompts = list(prompts)
    problem_ids = list(range(len(prompts))) if problem_ids is None else [int(i) for i in problem_ids]
    if len(problem_ids) != len(prompts) or any(i < 0 for i in problem_ids):
        raise ValueError(f"problem_ids must be {len(prompts)} non-negative integers, got {problem_ids!r}")
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

    eos = eos_ids(tokenizer, model, eos_token_id)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        if not eos:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token")
        pad_id = eos[0]

    old_side = tokenizer.padding_side
    was_training = bool(getattr(model, "training", False))
    device = model.device
    pools: list[list[Any]] = [[] for _ in prompts]
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
            do_sample=False,  # the draw is the argmax of the keyed Gumbel-perturbed logits (_KeyedSampler)
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=int(max_new_tokens),
            pad_token_id=pad_id,
            eos_token_id=eos if len(eos) != 1 else eos[0],
        )
        plan = plan_batches([len(ids) for ids in encoded], m, batch_size)
        done = [0] * len(prompts)  # samples drawn so far per prompt: the next chunk's first sample index
        with (
            torch.no_grad(),
            tqdm(total=len(prompts) * m, desc=desc, unit="seq", mininterval=2, disable=not progress) as bar,
        ):
            from transformers import LogitsProcessorList

            for idxs, n_ret in plan:
                width = max(len(encoded[i]) for i in idxs)
                rows = len(idxs) * n_ret  # the n_ret samples of each prompt are contiguous rows
                input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
                attention = torch.zeros((rows, width), dtype=torch.long)
                pids, sids = [], []
                for j, i in enumerate(idxs):
                    ids = torch.tensor(encoded[i], dtype=torch.long)
                    input_ids[j * n_ret : (j + 1) * n_ret, width - len(ids) :] = ids
                    attention[j * n_ret : (j + 1) * n_ret, width - len(ids) :] = 1
                    pids += [problem_ids[i]] * n_ret
                    sids += range(done[i], done[i] + n_ret)
                    done[i] += n_ret
                keyed = _KeyedSampler(seed, torch.tensor(pids, device=device), torch.tensor(sids, device=device),
                                      width, temperature, top_k, top_p)
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    logits_processor=LogitsProcessorList([keyed]),
                    **gen_kwargs,
                )
                new_tokens = out[:, width:].cpu().tolist()
                texts: list[Any] = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                if details:
                    texts = [_details(t, toks, eos) for t, toks in zip(texts, new_tokens, strict=True)]
                for j, i in enumerate(idxs):
                    pools[i].extend(texts[j * n_ret : (j + 1) * n_ret])
                bar.update(len(texts))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    for i, pool in enumerate(pools):
        if len(pool) != m:  # pragma: no cover - a generate() contract violation
            raise RuntimeError(f"prompt {i}: expected {m} samples, got {len(pool)}")
    return pools


def _details(text: str, tokens: list[int], eos: list[int]) -> dict[str, Any]:
    """A completion's text, its token count (through the first stop token; the rest is padding) and why
    it ended."""
    stop = next((t for t, tok in enumerate(tokens) if tok in eos), None)
    if stop is None:
        return {"text": text, "num_tokens": len(tokens), "finish_reason": "length"}
    return {"text": text, "num_tokens": stop + 1, "finish_reason": "stop"}


def num_generate_calls(num_prompts: int, m: int, batch_size: int) -> int:
    """How many ``generate`` calls :func:`sample_pools` makes (for sizing runs)."""
    if m <= batch_size:
        return math.ceil(num_prompts / max(1, batch_size // m))
    return num_prompts * math.ceil(m / batch_size)
