"""dry_run=true: the plan of a run (stages, branches, data, steps, samples, tokens) without loading a model."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from .cache import branch_key, warmup_key
from .config import logprob_temperature, process_batch
from .pipeline import Pipeline
from .tasks.base import DataError
from .training.data import stage_rows


class _NoTask:
    name = "unloaded"


def _steps(section, n_rows: int, per_step: int) -> int:
    if int(section.max_steps) > 0:
        return int(section.max_steps)
    return math.ceil(float(section.num_train_epochs) * n_rows / max(per_step, 1))


def plan(cfg: DictConfig) -> dict:
    """A dict describing what stage=pipeline would do for this config."""
    note = None
    try:
        pipe = Pipeline(cfg)  # builds the task (reads and checks data), loads no model
        train_rows = pipe.task.train_rows()
        test_rows = pipe.task.test_rows()
        task_name = pipe.task.name
    except (OSError, ConnectionError, DataError) as err:
        # Offline with a hub dataset: plan from the configured counts instead of the data.
        note = f"data not loaded ({type(err).__name__}: {str(err)[:120]}); counts from the config"
        pipe = Pipeline(cfg, task=_NoTask())
        train_rows = list(range(int(cfg.dataset.n_train or 0)))
        test_rows = list(range(int(cfg.dataset.n_test or 0)))
        task_name = cfg.dataset.name
    n_train = len(train_rows)
    n_test = len(test_rows)
    n_eval = min(n_test, int(cfg.eval.num_problems or n_test))
    w = cfg.warmup
    warm_rows = len(stage_rows(train_rows, w)) if w.enabled else 0
    world = int(cfg.hardware.num_processes or 1)  # a dry run launches nothing: the configured count
    warm_proc, warm_accum, warm_batch = process_batch(w, cfg.hardware, world)
    o = cfg.objective
    obj_rows = len(stage_rows(train_rows, o))
    obj_proc, obj_accum, batch = process_batch(o, cfg.hardware, world)
    branches = {}
    for name, s_cfg in pipe.branches().items():
        info = {"strategy": s_cfg.name, "n": int(s_cfg.n), "k": s_cfg.k, "cache_key": branch_key(cfg, s_cfg)}
        if o.name == "sft":
            info.update(objective="sft", rows=obj_rows, optimizer_steps=_steps(o, obj_rows, batch),
                        examples_per_step=batch)
        else:
            steps = _steps(o, obj_rows * o.num_generations, batch)
            rollouts = steps * batch
            info.update(objective="rl", rows=obj_rows, optimizer_steps=steps, prompts_per_step=batch // o.num_generations,
                        rollouts_per_prompt=o.num_generations, rollouts=rollouts,
                        max_generated_tokens=rollouts * o.max_completion_length)
        branches[name] = info
    evals = (["warmup"] if cfg.eval.eval_warmup and w.enabled else []) + list(branches)
    samples = n_eval * cfg.eval.pool_size
    return {
        "experiment": cfg.experiment, "task": task_name, "model": cfg.model.name, "note": note,
        "stages": ["warmup", "train", "eval"] if cfg.stage == "pipeline" else [cfg.stage],
        "data": {"train_rows": n_train, "test_rows": n_test, "eval_problems": n_eval},
        "warmup": {"enabled": bool(w.enabled), "rows": warm_rows, "examples_per_step": warm_batch,
                   "optimizer_steps": _steps(w, warm_rows, warm_batch) if w.enabled else 0,
                   "cache_key": warmup_key(cfg)},
        "branches": branches,
        "processes": {"count": world, "warmup_batch": [warm_proc, warm_accum, warm_batch], "branch_batch": [obj_proc, obj_accum, batch],
                      "keep_global_batch": bool(cfg.hardware.keep_global_batch),
                      "accelerate_config": cfg.hardware.accelerate_config},
        "training": training_settings(cfg),
        "eval": {"models": evals, "pool_size": int(cfg.eval.pool_size), "budgets": list(cfg.eval.budgets),
                 "samples_per_model": samples, "samples_total": samples * len(evals),
                 "max_generated_tokens": samples * len(evals) * cfg.eval.max_new_tokens},
    }


def training_settings(cfg: DictConfig) -> dict:
    """The conventions that change a trained model's numbers (docs/fidelity.md), as the plan prints them."""
    o, s = cfg.objective, cfg.strategy
    out = {"lr": float(o.learning_rate), "weight_decay": float(o.weight_decay), "grad_clip": float(o.max_grad_norm)}
    if o.name == "sft":
        out["reduction"] = o.reduction
        return out
    out.update(kl=f"beta {float(o.beta):g} x token-mean KL per completion", sample_temperature=float(o.temperature),
               logprob_temperature=logprob_temperature(o), dropout="off" if o.disable_dropout else "on",
               advantage_clip=o.advantage_clip, weight_clip=s.clip, mean_normalize=bool(s.mean_normalize),
               all_wrong_penalty=float(o.all_wrong_penalty))
    if s.name == "majority":
        out["k"] = "dynamic (invalid answers = one wrong category)" if s.k is None else int(s.k)
    return out


def format_plan(cfg: DictConfig, launcher: dict | None = None) -> str:
    """The plan as text; ``launcher`` (main.launcher_processes) adds where the processes run."""
    p = plan(cfg)
    lines = [f"plan for experiment '{p['experiment']}' (task {p['task']}, model {p['model']})",
             f"  stages: {' -> '.join(p['stages'])}",
             f"  data: {p['data']['train_rows']} train rows, {p['data']['test_rows']} test rows, "
             f"{p['data']['eval_problems']} evaluated"]
    if p["note"]:
        lines.append(f"  note: {p['note']}")
    w = p["warmup"]
    warm = (f"CE on {w['rows']} rows, {w['optimizer_steps']} optimizer steps of {w['examples_per_step']} "
            f"examples (cache {w['cache_key']})") if w["enabled"] else "off"
    lines.append(f"  warmup: {warm}")
    for name, b in p["branches"].items():
        k = f", k={b['k']}" if b["k"] is not None else ""
        if b["objective"] == "sft":
            what = f"{b['rows']} rows, {b['optimizer_steps']} optimizer steps of {b['examples_per_step']} examples"
        else:
            what = (f"{b['rows']} prompts, {b['optimizer_steps']} optimizer steps, {b['prompts_per_step']} prompts x "
                    f"{b['rollouts_per_prompt']} rollouts, {b['rollouts']} rollouts (<= {b['max_generated_tokens']} tokens)")
        lines.append(f"  branch {name}: {b['objective']} {b['strategy']}(N={b['n']}{k}): {what}")
    pr = p["processes"]
    lines.append(f"  processes: {pr['count']}; per process batch x accumulation / global: warmup "
                 f"{pr['warmup_batch'][0]} x {pr['warmup_batch'][1]} / {pr['warmup_batch'][2]}, branches "
                 f"{pr['branch_batch'][0]} x {pr['branch_batch'][1]} / {pr['branch_batch'][2]}"
                 + (" (global batch kept)" if pr["keep_global_batch"] else " (per-process batch kept)")
                 + (f", accelerate config {pr['accelerate_config']}" if pr["accelerate_config"] else ""))
    if launcher is not None:
        gpus = f", {launcher['gpus_per_node']} GPU(s) per node" if launcher.get("gpus_per_node") else ""
        lines.append(f"  launcher: {launcher['name']}, {launcher['nodes']} node(s) x {launcher['tasks_per_node']} "
                     f"task(s){gpus} = {launcher['processes']} process(es) per grid job")
    lines.append("  training: " + ", ".join(f"{k} {v}" for k, v in p["training"].items()))
    e = p["eval"]
    lines.append(f"  eval: {', '.join(e['models'])}: pool {e['pool_size']} per problem, budgets {e['budgets']}, "
                 f"{e['samples_total']} samples (<= {e['max_generated_tokens']} tokens)")
    return "\n".join(lines)
