"""Loading a causal LM and its tokenizer from a hub id or a path: dtype, 4-bit NF4, LoRA, adapters.

Tiny models (models/tiny.py) are saved with save_pretrained and loaded here by the same
`from_pretrained` code path as a hub model, so the real loader is what the tests exercise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .tiny import resolve_model_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    """Resolve (build/cache if tiny) and load; `path` overrides, e.g. a warmup checkpoint. A hub model that
    cannot be had (offline and not cached, unreachable, malformed id) is a HubError naming model.path."""
    base = resolve_model_path(model_cfg, cache_dir)
    try:
        return _load_model_and_tokenizer(model_cfg, hardware, base, path, for_training)
    except Exception as err:
        from ..hub import hub_error, hub_failure

        if hub_failure(err) is None:
            raise
        raise hub_error("model.path", base, err, kind="model") from err


def _load_model_and_tokenizer(model_cfg: Any, hardware: Any, base: str, path: str | None, for_training: bool):
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
