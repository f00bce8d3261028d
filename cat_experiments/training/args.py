"""TRL trainer arguments (SFTConfig, GRPOConfig) from the config sections of a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..config import logprob_temperature, process_batch
from ..distributed import world_size
from ..models import device_for, wants_checkpointing


def _common_args(section: Any, out_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    hw = cfg.hardware
    on_cpu = device_for(hw).type == "cpu"
    max_steps = int(section.max_steps)
    batch, accumulation, _ = process_batch(section, hw, world_size())  # this process's share
    return dict(
        output_dir=str(out_dir),
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=float(section.num_train_epochs),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=float(section.learning_rate),
        lr_scheduler_type=section.lr_scheduler_type,
        warmup_steps=float(section.warmup_steps),
        max_grad_norm=float(section.max_grad_norm),
        logging_steps=int(getattr(section, "logging_steps", 100)),
        save_steps=int(getattr(section, "save_steps", 200)),
        save_total_limit=2,
        report_to="none",
        seed=int(cfg.seed),
        use_cpu=on_cpu,
        bf16=(hw.dtype == "bfloat16" and not on_cpu),
        fp16=(hw.dtype == "float16" and not on_cpu),
        gradient_checkpointing=wants_checkpointing(cfg.model, hw),
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def sft_config(section: Any, out_dir: Path, cfg: DictConfig):
    from trl import SFTConfig

    return SFTConfig(**_common_args(section, out_dir, cfg), max_length=None, dataset_num_proc=None,
                     weight_decay=float(section.weight_decay))


def grpo_config(section: Any, out_dir: Path, cfg: DictConfig):
    """TRL's GRPOConfig. TRL divides the logits by `temperature` both to sample and to score; to score at
    objective.logprob_temperature instead, `temperature` is the scoring one and the sampling temperature
    reaches generate (and vLLM) through generation_kwargs, which TRL applies on top."""
    from trl import GRPOConfig

    sample_t, score_t = float(section.temperature), logprob_temperature(section)
    return GRPOConfig(
        **_common_args(section, out_dir, cfg),
        weight_decay=float(section.weight_decay),
        num_generations=int(section.num_generations),
        max_completion_length=int(section.max_completion_length),
        temperature=score_t,
        generation_kwargs=None if score_t == sample_t else {"temperature": sample_t},
        disable_dropout=bool(section.disable_dropout),
        top_p=float(section.top_p),
        top_k=int(section.top_k) if section.top_k else 0,
        beta=float(section.beta),
        loss_type=section.loss_type,
        scale_rewards=section.scale_rewards,
        log_completions=False,
        use_vllm=bool(section.use_vllm),
        vllm_mode=section.vllm_mode,
        vllm_gpu_memory_utilization=float(section.vllm_gpu_memory_utilization),
        # TRL's truncated importance sampling compares vLLM's sampling log-probs with the trainer's: both
        # must be at one temperature, so it is off when objective.logprob_temperature differs
        vllm_importance_sampling_correction=score_t == sample_t,
    )
