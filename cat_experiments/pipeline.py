"""The stages: warmup -> train (CAT branch, and the standard branch when baseline=true) -> eval.

Data flows one way: config -> task + model -> trainer -> checkpoint -> sampler -> pools ->
estimators -> records. Every expensive artefact lives in the cache under a key derived from the
config that produced it, so a grid's branches share one warmup, a rerun skips finished work, and a
killed training run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import distributed as dist
from .cache import (
    DONE,
    branch_key,
    cache_root,
    config_key,
    last_checkpoint,
    main_lock,
    standard_strategy_cfg,
    warmup_key,
)
from .config import validate
from .models import load_model_and_tokenizer, resolve_model_path
from .strategies import build_strategy
from .tasks import Task, build_task
from .training.args import grpo_config, sft_config
from .training.data import stage_rows

log = logging.getLogger("cat_experiments")


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
        # CAT weights near 0 leave gradients (and Adam's second moments) in the denormal range, where
        # CPU arithmetic is many times slower; flushing them to zero only drops values below ~1e-38
        torch.set_flush_denormal(True)

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

    def base_model(self) -> str:
        """The base model's path or hub id; a tiny model is built once, by the main rank."""
        if dist.is_main():
            resolve_model_path(self.cfg.model, self.cache)
        dist.barrier()
        return resolve_model_path(self.cfg.model, self.cache)  # built by now: only the path

    def _cached_or_resume(self, stage: str, final: Path, out: Path) -> tuple[bool, str | None]:
        """The main rank's view (under its lock) of a cache entry, on every rank: (finished?, checkpoint
        to resume from)."""
        done, resume = dist.broadcast(((final / DONE).exists(), last_checkpoint(out)) if dist.is_main() else None)
        if done:
            log.info("[%s] cached: %s", stage, final)
        return done, resume

    def warmup(self) -> str:
        """CE warmup from the base model; cached by warmup_key. Returns the checkpoint path."""
        cfg = self.cfg
        if not cfg.warmup.enabled:
            return self.base_model()
        out = self.cache / "warmup" / warmup_key(cfg)
        with main_lock(out):
            return self._warmup(out)

    def _warmup(self, out: Path) -> str:
        cfg = self.cfg
        final = out / "final"
        done, resume = self._cached_or_resume("warmup", final, out)
        if done:
            return str(final)
        from .strategies import Standard
        from .training.data import sft_dataset
        from .training.sft import CatSFTTrainer

        rows = stage_rows(self.task.train_rows(), cfg.warmup)
        model, tok = self._load(None)
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
        with main_lock(out):
            return self._train_branch(name, strategy_cfg, init_path, out)

    def _train_branch(self, name: str, strategy_cfg: DictConfig, init_path: str, out: Path) -> str:
        cfg = self.cfg
        final = out / "final"
        done, resume = self._cached_or_resume(f"train:{name}", final, out)
        if done:
            return str(final)
        strategy = build_strategy(strategy_cfg)
        model, tok = self._load(init_path)
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
        trainer.save_model(str(final))  # the Trainer writes on the main process only (FSDP/ZeRO gather first)
        if dist.is_main():
            tok.save_pretrained(str(final))
            (final / DONE).write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
        dist.barrier()

    def evaluate(self, name: str, model_path: str) -> dict[str, dict[int, float]]:
        """Scaling curves of one checkpoint, cached beside it by the eval config."""
        key = config_key("eval", self.cfg.eval, self.cfg.dataset, self.cfg.seed)
        cached = Path(model_path) / f"eval-{key}.json"
        with main_lock(cached):  # grid jobs sharing the warmup / standard checkpoint evaluate it once
            return self._evaluate(name, model_path, cached)

    def _evaluate(self, name: str, model_path: str, cached: Path) -> dict[str, dict[int, float]]:
        """Sharded over the processes: rank r samples and scores problems r, r + W, ...; the scores are
        gathered and every rank computes the same curves. A problem's pool depends on (seed, problem
        index) only (evaluation/sampling.py), so any number of processes gives the curves of one."""
        from .evaluation.engines import open_engine
        from .evaluation.sweep import check_budgets, scaling_curves, score_pools
        from .training.data import eval_prompts

        cfg = self.cfg
        if dist.broadcast(cached.exists() if dist.is_main() else None):
            log.info("[eval:%s] cached: %s", name, cached)
            return {m: {int(b): v for b, v in c.items()} for m, c in json.loads(cached.read_text()).items()}
        rows = self.task.test_rows()
        if cfg.eval.num_problems:
            rows = rows[: int(cfg.eval.num_problems)]
        e = cfg.eval
        budgets = check_budgets(list(e.budgets), int(e.pool_size))
        mine = list(dist.shard(len(rows)))
        log.info("[eval:%s] %d problems x %d samples (%s)%s", name, len(rows), e.pool_size, e.engine,
                 f", {len(mine)} on rank {dist.rank()} of {dist.world_size()}" if dist.world_size() > 1 else "")
        local_rows = [rows[i] for i in mine]
        engine = open_engine(e.engine, model_path, lambda path: self._load(path, for_training=False),
                             dtype=cfg.model.get("load_dtype") or cfg.hardware.dtype,
                             memory_fraction=e.vllm_memory_fraction, max_model_len=e.vllm_max_model_len,
                             seed=int(cfg.seed))
        try:
            pools = engine.sample(eval_prompts(engine.tokenizer, local_rows, cfg.model.use_chat_template),
                                  int(e.pool_size), max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                                  top_p=e.top_p, top_k=e.top_k, batch_size=e.batch_size, seed=cfg.seed,
                                  desc=f"eval {name}", problem_ids=mine)
        finally:
            engine.close()
        local = dict(zip(mine, score_pools(self.task, local_rows, pools), strict=True))
        scores = {i: sc for part in dist.all_gather(local) for i, sc in part.items()}
        curves = scaling_curves(self.task, rows, [scores[i] for i in range(len(rows))], budgets)
        if dist.is_main():
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps(curves))
            os.replace(tmp, cached)
        return curves

    # ---- what main dispatches -------------------------------------------------------------------------------
    def run(self, stage: str | None = None) -> dict[str, Any] | None:
        stage = stage or self.cfg.stage
        self.base_model()
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
