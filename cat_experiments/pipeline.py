"""The stages: warmup -> train (CAT branch, and the standard branch when baseline=true) -> eval.

Data flows one way: config -> task + model -> trainer -> checkpoint -> sampler -> pools ->
estimators -> records. Every expensive artefact lives in the cache under a key derived from the
config that produced it, so a grid's branches share one warmup, a rerun skips finished work, and a
killed training run resumes from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, StrategyConfig, logprob_temperature, validate
from .models import load_model_and_tokenizer, resolve_model_path, wants_checkpointing
from .strategies import build_strategy
from .tasks import Task, build_task

log = logging.getLogger("cat_experiments")
DONE = "DONE"


# ---- keys and paths ----------------------------------------------------------------------------------

def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def config_key(*parts: Any) -> str:
    """A short stable hash of config sections (what an artefact depends on, nothing else)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def warmup_key(cfg: DictConfig) -> str:
    return config_key("warmup", cfg.model, cfg.dataset, cfg.warmup, cfg.seed)


def standard_strategy_cfg() -> DictConfig:
    """The baseline branch's strategy: canonical, so every branch of a grid shares one standard run."""
    return OmegaConf.structured(StrategyConfig(name="standard", n=1))


def branch_key(cfg: DictConfig, strategy_cfg: DictConfig) -> str:
    return config_key("branch", warmup_key(cfg), strategy_cfg, cfg.objective, cfg.seed)


def cache_root(cfg: DictConfig) -> Path:
    root = Path(cfg.cache_dir)
    if not root.is_absolute():
        try:
            from hydra.utils import get_original_cwd

            root = Path(get_original_cwd()) / root
        except (ImportError, ValueError):
            root = Path.cwd() / root
    return root


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint (trainer_state.json is written last, so a run killed mid-save
    leaves a checkpoint without it, which is skipped)."""
    ckpts = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    ckpts.sort(key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def stage_rows(rows: list, section: Any) -> list:
    """rows[data_start : data_start + num_examples]: e.g. warmup on the first 2,000, RL on the next 500."""
    start = int(section.data_start)
    end = None if section.num_examples is None else start + int(section.num_examples)
    chosen = rows[start:end]
    if not chosen:
        raise ConfigError(f"config error: data_start={start}, num_examples={section.num_examples} selects no "
                          f"rows out of {len(rows)} training rows")
    return chosen


@contextmanager
def cache_lock(path: Path):
    """An exclusive lock beside a cache entry, so parallel jobs of a grid (SLURM, submitit) build a
    shared warmup or standard branch once while the others wait and then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- trainer arguments ---------------------------------------------------------------------------------

def _common_args(section: Any, out_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    hw = cfg.hardware
    on_cpu = hw.device == "cpu" or (hw.device == "auto" and not torch.cuda.is_available())
    max_steps = int(section.max_steps)
    return dict(
        output_dir=str(out_dir),
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=float(section.num_train_epochs),
        per_device_train_batch_size=int(section.per_device_train_batch_size),
        gradient_accumulation_steps=int(section.gradient_accumulation_steps),
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
                     weight_decay=float(getattr(section, "weight_decay", 0.0)))


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
    )


# ---- stages ---------------------------------------------------------------------------------------------

class Pipeline:
    """Runs stages for one config. `callbacks_for(prefix)` gives extra TrainerCallbacks (W&B)."""

    def __init__(self, cfg: DictConfig, task: Task | None = None, callbacks_for=None):
        validate(cfg)
        self.cfg = cfg
        self.task = task if task is not None else build_task(cfg.dataset)
        self.cache = cache_root(cfg)
        self.callbacks_for = callbacks_for or (lambda prefix: [])
        self.train_stats: dict[str, dict[str, float]] = {}
        if cfg.hardware.num_threads:
            torch.set_num_threads(int(cfg.hardware.num_threads))

    # branches: name -> strategy config
    def branches(self) -> dict[str, DictConfig]:
        out = {}
        if self.cfg.strategy.name != "standard" and self.cfg.baseline:
            out["standard"] = standard_strategy_cfg()
        out["cat" if self.cfg.strategy.name != "standard" else "standard"] = self.cfg.strategy
        return out

    def _load(self, path: str | None, for_training: bool = True):
        return load_model_and_tokenizer(self.cfg.model, self.cfg.hardware, self.cache, path=path,
                                        for_training=for_training)

    def warmup(self) -> str:
        """CE warmup from the base model; cached by warmup_key. Returns the checkpoint path."""
        cfg = self.cfg
        if not cfg.warmup.enabled:
            return resolve_model_path(cfg.model, self.cache)
        out = self.cache / "warmup" / warmup_key(cfg)
        with cache_lock(out):
            return self._warmup(out)

    def _warmup(self, out: Path) -> str:
        cfg = self.cfg
        final = out / "final"
        if (final / DONE).exists():
            log.info("[warmup] cached: %s", final)
            return str(final)
        from .strategies import Standard
        from .training.data import sft_dataset
        from .training.sft import CatSFTTrainer

        rows = stage_rows(self.task.train_rows(), cfg.warmup)
        model, tok = self._load(None)
        resume = last_checkpoint(out)
        log.info("[warmup] CE on %d rows, %s steps -> %s%s", len(rows), cfg.warmup.max_steps, out,
                 f" (resuming {resume})" if resume else "")
        trainer = CatSFTTrainer(model=model, args=sft_config(cfg.warmup, out, cfg), processing_class=tok,
                                train_dataset=sft_dataset(rows, cfg.model.use_chat_template),
                                strategy=Standard(), reduction=cfg.warmup.reduction,
                                callbacks=self.callbacks_for("warmup"))
        trainer.train(resume_from_checkpoint=resume)
        self._save_final(trainer, tok, final)
        return str(final)

    def branch_dir(self, name: str, strategy_cfg: DictConfig) -> Path:
        return self.cache / "branches" / f"{name}-{branch_key(self.cfg, strategy_cfg)}"

    def train_branch(self, name: str, strategy_cfg: DictConfig, init_path: str) -> str:
        out = self.branch_dir(name, strategy_cfg)
        with cache_lock(out):
            return self._train_branch(name, strategy_cfg, init_path, out)

    def _train_branch(self, name: str, strategy_cfg: DictConfig, init_path: str, out: Path) -> str:
        cfg = self.cfg
        final = out / "final"
        if (final / DONE).exists():
            log.info("[train:%s] cached: %s", name, final)
            return str(final)
        strategy = build_strategy(strategy_cfg)
        model, tok = self._load(init_path)
        resume = last_checkpoint(out)
        log.info("[train:%s] %s %s, %s steps -> %s%s", name, cfg.objective.name, strategy.describe(),
                 cfg.objective.max_steps, out, f" (resuming {resume})" if resume else "")
        rows = stage_rows(self.task.train_rows(), cfg.objective)
        if cfg.objective.name == "sft":
            from .training.data import sft_dataset
            from .training.sft import CatSFTTrainer

            trainer = CatSFTTrainer(model=model, args=sft_config(cfg.objective, out, cfg), processing_class=tok,
                                    train_dataset=sft_dataset(rows, cfg.model.use_chat_template),
                                    strategy=strategy, reduction=cfg.objective.reduction,
                                    callbacks=self.callbacks_for(name))
        else:
            from .training.data import rl_dataset
            from .training.rl import CatGRPOTrainer

            trainer = CatGRPOTrainer(model=model, args=grpo_config(cfg.objective, out, cfg), processing_class=tok,
                                     train_dataset=rl_dataset(rows, cfg.model.use_chat_template),
                                     strategy=strategy, task=self.task,
                                     all_wrong_penalty=cfg.objective.all_wrong_penalty,
                                     advantage_clip=cfg.objective.advantage_clip,
                                     callbacks=self.callbacks_for(name))
            if resume:
                trainer.load_strategy_state(resume)
        trainer.train(resume_from_checkpoint=resume)
        self.train_stats[name] = _last_logged(trainer)
        self._save_final(trainer, tok, final)
        return str(final)

    @staticmethod
    def _save_final(trainer, tok, final: Path) -> None:
        trainer.save_model(str(final))
        tok.save_pretrained(str(final))
        (final / DONE).write_text(time.strftime("%Y-%m-%d %H:%M:%S"))

    def evaluate(self, name: str, model_path: str) -> dict[str, dict[int, float]]:
        """Scaling curves of one checkpoint, cached beside it by the eval config."""
        key = config_key("eval", self.cfg.eval, self.cfg.dataset, self.cfg.seed)
        cached = Path(model_path) / f"eval-{key}.json"
        with cache_lock(cached):  # grid jobs sharing the warmup / standard checkpoint evaluate it once
            return self._evaluate(name, model_path, cached)

    def _evaluate(self, name: str, model_path: str, cached: Path) -> dict[str, dict[int, float]]:
        from .evaluation.sweep import evaluate
        from .training.data import eval_prompts

        cfg = self.cfg
        if cached.exists():
            log.info("[eval:%s] cached: %s", name, cached)
            return {m: {int(b): v for b, v in c.items()} for m, c in json.loads(cached.read_text()).items()}
        model, tok = self._load(model_path, for_training=False)
        rows = self.task.test_rows()
        if cfg.eval.num_problems:
            rows = rows[: int(cfg.eval.num_problems)]
        log.info("[eval:%s] %d problems x %d samples", name, len(rows), cfg.eval.pool_size)
        e = cfg.eval
        curves, _ = evaluate(model, tok, self.task, rows, prompts=eval_prompts(tok, rows, cfg.model.use_chat_template),
                             pool_size=e.pool_size, budgets=list(e.budgets), max_new_tokens=e.max_new_tokens,
                             temperature=e.temperature, top_p=e.top_p, top_k=e.top_k, batch_size=e.batch_size,
                             seed=cfg.seed, desc=f"eval {name}")
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(curves))
        os.replace(tmp, cached)
        return curves

    # ---- what main dispatches -------------------------------------------------------------------------------
    def run(self, stage: str | None = None) -> dict[str, Any] | None:
        stage = stage or self.cfg.stage
        warm = self.warmup()
        if stage == "warmup":
            return None
        paths = {}
        for name, s_cfg in self.branches().items():
            paths[name] = self.train_branch(name, s_cfg, warm) if stage in ("pipeline", "train") else \
                self._finished_branch(name, s_cfg)
        if stage == "train":
            return None
        results: dict[str, Any] = {"branches": {}}
        if self.cfg.eval.eval_warmup and self.cfg.warmup.enabled:
            results["branches"]["warmup"] = self.evaluate("warmup", warm)
        for name, path in paths.items():
            results["branches"][name] = self.evaluate(name, path)
        return self.describe_results(results)

    def _finished_branch(self, name: str, strategy_cfg: DictConfig) -> str:
        final = self.branch_dir(name, strategy_cfg) / "final"
        if not (final / DONE).exists():
            raise FileNotFoundError(f"stage=eval: branch '{name}' has no finished training at {final}; "
                                    "run stage=train (or stage=pipeline) with the same config first")
        return str(final)

    def describe_results(self, results: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        results.update({
            "experiment": cfg.experiment, "strategy": cfg.strategy.name, "target_n": int(cfg.strategy.n),
            "strategy_k": cfg.strategy.k, "seed": int(cfg.seed), "objective": cfg.objective.name,
            "task": self.task.name, "pool_size": int(cfg.eval.pool_size), "train_stats": self.train_stats,
            "config": OmegaConf.to_container(cfg, resolve=True),
        })
        return results


def _last_logged(trainer) -> dict[str, float]:
    """Averages of the CAT diagnostics over the training log (share of weights < 0.5 etc.)."""
    history = [h for h in trainer.state.log_history if "loss" in h or "cat_weight/mean" in h]
    stats: dict[str, float] = {}
    for key in ("cat_weight/mean", "cat_weight/lt_0.5", "seq_prob/mean", "loss", "reward"):
        values = [h[key] for h in history if key in h]
        if values:
            stats[key + "/first"] = float(values[0])
            stats[key + "/last"] = float(values[-1])
    return stats
