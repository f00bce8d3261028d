"""Tiny models built locally (no downloads): a char tokenizer, tiny GPT-2 / Mistral, the tiny protein LM.

Each is built deterministically from its config and cached under a key of every setting that
shapes it, so a grid's jobs share one copy; models/loading.py then loads it like a hub model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .char_tokenizer import SPECIALS, build_char_tokenizer

log = logging.getLogger(__name__)

__all__ = ["SPECIALS", "TINY_MISTRAL_CHAT_TEMPLATE", "build_char_tokenizer", "build_tiny_model", "resolve_model_path"]

# A Mistral-Instruct-like chat template for the tiny Mistral's char tokenizer ("[INST] {user} [/INST]{reply}</s>"),
# so model.use_chat_template=true exercises the real model's prompt path on CPU.
TINY_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def tiny_key_fields(cfg: Any) -> dict[str, Any]:
    """What a tiny model's cache key hashes (written to its key.json)."""
    from ..cache import KEY_VERSION

    fields = {k: getattr(cfg, k) for k in ("builder", "chars", "n_layer", "n_embd", "n_head", "n_positions", "init_seed")}
    fields["version"] = KEY_VERSION
    if cfg.builder == "tiny_protein":  # a pretrained model: every pretraining setting is part of the key
        from .protein import pretrain_settings

        fields["pretrain"] = pretrain_settings(cfg)
    return fields


def _tiny_key(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(tiny_key_fields(cfg), sort_keys=True).encode()).hexdigest()[:12]


def build_tiny_model(cfg: Any, out_dir: Path) -> Path:
    """Build a random-init tiny model (GPT-2 or Mistral architecture) + char tokenizer into out_dir;
    tiny_protein: a char GPT-2 pretrained on a protein mixture (models/protein.py, 1-3 CPU-minutes)."""
    from transformers import AutoModelForCausalLM, GPT2Config, MistralConfig

    if cfg.builder == "tiny_protein":
        from .protein import build_tiny_protein_model

        return build_tiny_protein_model(cfg, out_dir)

    tok = build_char_tokenizer(cfg.chars)
    common = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
              "pad_token_id": tok.pad_token_id}
    if cfg.builder == "tiny_gpt2":
        config = GPT2Config(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                            n_positions=cfg.n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    elif cfg.builder == "tiny_mistral":
        config = MistralConfig(hidden_size=cfg.n_embd, intermediate_size=cfg.n_embd * 2,
                               num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                               num_key_value_heads=max(1, cfg.n_head // 2), max_position_embeddings=cfg.n_positions,
                               head_dim=cfg.n_embd // cfg.n_head, **common)
    else:
        raise ValueError(f"model.builder={cfg.builder!r}: choose tiny_gpt2, tiny_mistral or tiny_protein "
                         "(or null for a hub id/path)")
    if cfg.builder == "tiny_mistral":
        tok.chat_template = TINY_MISTRAL_CHAT_TEMPLATE
    torch.manual_seed(cfg.init_seed)
    model = AutoModelForCausalLM.from_config(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def resolve_model_path(cfg: Any, cache_dir: str | Path) -> str:
    """The path or hub id to load: builds (once) and caches a tiny model when cfg.builder is set."""
    if cfg.builder:
        out = Path(cache_dir) / "models" / f"{cfg.builder}-{_tiny_key(cfg)}"
        if not (out / "config.json").exists():
            _build_once(cfg, out)
        return str(out)
    if not cfg.path:
        raise ValueError(f"model.path is empty for model.name={cfg.name!r}: give a hub id or a local path")
    return cfg.path


def _build_once(cfg: Any, out: Path) -> None:
    """Build into a temp dir beside ``out`` and rename it into place, under a lock: a build killed
    mid-save leaves no half model in the cache, and parallel grid jobs build once."""
    from ..cache import cache_lock

    with cache_lock(out):
        if (out / "config.json").exists():  # another job built it while we waited
            return
        log.info("building %s into %s", cfg.builder, out)
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build_tiny_model(cfg, tmp)
            (tmp / "key.json").write_text(json.dumps(tiny_key_fields(cfg), indent=2, sort_keys=True, default=str))
            shutil.rmtree(out, ignore_errors=True)  # a broken entry left by an older version
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
