"""Models and tokenizers: hub ids, local paths, and tiny models built locally (no downloads).

Tiny models are built deterministically from their config, saved with save_pretrained into the
cache and then loaded by the same `from_pretrained` code path as a hub model, so the real loader
is what the tests exercise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A Mistral-Instruct-like chat template for the tiny Mistral's char tokenizer ("[INST] {user} [/INST]{reply}</s>"),
# so model.use_chat_template=true exercises the real model's prompt path on CPU.
TINY_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def build_char_tokenizer(chars: str):
    """A character-level fast tokenizer: one token per character, plus PAD/BOS/EOS/UNK."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(dict.fromkeys(chars)))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")


def _tiny_key(cfg: Any) -> str:
    fields = {k: getattr(cfg, k) for k in ("builder", "chars", "n_layer", "n_embd", "n_head", "n_positions", "init_seed")}
    if cfg.builder == "tiny_protein":  # a pretrained model: every pretraining setting is part of the key
        from .protein_lm import pretrain_settings

        fields["pretrain"] = pretrain_settings(cfg)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def build_tiny_model(cfg: Any, out_dir: Path) -> Path:
    """Build a random-init tiny model (GPT-2 or Mistral architecture) + char tokenizer into out_dir;
    tiny_protein: a char GPT-2 pretrained on a protein mixture (protein_lm.py, 1-3 CPU-minutes)."""
    from transformers import AutoModelForCausalLM, GPT2Config, MistralConfig

    if cfg.builder == "tiny_protein":
        from .protein_lm import build_tiny_protein_model

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
            log.info("building %s into %s", cfg.builder, out)
            build_tiny_model(cfg, out)
        return str(out)
    if not cfg.path:
        raise ValueError(f"model.path is empty for model.name={cfg.name!r}: give a hub id or a local path")
    return cfg.path


def wants_4bit(model_cfg: Any, hardware: Any) -> bool:
    return bool(model_cfg.load_in_4bit or getattr(hardware, "load_in_4bit", False))


def wants_checkpointing(model_cfg: Any, hardware: Any) -> bool:
    return bool(model_cfg.gradient_checkpointing or getattr(hardware, "gradient_checkpointing", False))


def device_for(hardware: Any) -> torch.device:
    if hardware.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(hardware.device)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # e.g. Mistral: pad with EOS (completion masks keep padding out of losses)
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, model_cfg: Any, hardware: Any, for_training: bool = True):
    """Load a causal LM from a hub id or path, with 4-bit NF4 quantisation and LoRA when configured."""
    from transformers import AutoModelForCausalLM

    dtype = DTYPES[getattr(model_cfg, "load_dtype", None) or hardware.dtype]
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code}
    load_in_4bit = wants_4bit(model_cfg, hardware)
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=model_cfg.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_cfg.bnb_4bit_use_double_quant, bnb_4bit_compute_dtype=dtype)
        if device_for(hardware).type == "cuda":
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if load_in_4bit:
        _disable_bnb_cpu_bf16_path(model)
    else:
        model.to(device_for(hardware))
    if for_training and model_cfg.lora is not None and not _has_adapter(model):
        model = add_lora(model, model_cfg, quantized=load_in_4bit, checkpointing=wants_checkpointing(model_cfg, hardware))
    if wants_checkpointing(model_cfg, hardware) and for_training:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _has_adapter(model) -> bool:
    return hasattr(model, "peft_config")


def add_lora(model, model_cfg: Any, quantized: bool, checkpointing: bool = False):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    lora = model_cfg.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _disable_bnb_cpu_bf16_path(model) -> None:
    """bitsandbytes 4-bit on AVX512-BF16 CPUs: after an eval-mode no-grad forward (e.g. generate),
    backward fails with an in-place-on-a-leaf error. Turning off that fast path avoids it
    (docs/notes/environment.md)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_model_and_tokenizer(model_cfg: Any, hardware: Any, cache_dir: str | Path, path: str | None = None,
                             for_training: bool = True):
    """Resolve (build/cache if tiny) and load; `path` overrides, e.g. a warmup checkpoint."""
    base = resolve_model_path(model_cfg, cache_dir)
    path = path or base
    if (Path(path) / "adapter_config.json").exists():  # a LoRA checkpoint: base model + trained adapter
        from peft import PeftModel

        model = load_model(base, model_cfg, hardware, for_training=False)
        if wants_4bit(model_cfg, hardware) and for_training:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=wants_checkpointing(model_cfg, hardware))
        model = PeftModel.from_pretrained(model, path, is_trainable=for_training)
        return model, load_tokenizer(path)
    return load_model(path, model_cfg, hardware, for_training=for_training), load_tokenizer(path)
