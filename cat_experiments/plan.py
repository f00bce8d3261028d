"""dry_run=true: the plan of a run (stages, branches, data, steps, samples, tokens) without loading a model."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from .cache import branch_key, warmup_key
from .config import logprob_temperature, process_batch
from .costs import format_costs, grid_size, job_costs
from .pipeline import Pipeline
from .tasks.base import DataError
from .training.data import stage_rows


class _NoTask:
    name = "unloaded"


def _steps(section, n_rows: int, per_step: int) -> int:
    if int(section.max_steps) > 0:
        return int(section.max_steps)
    return math.ceil(float(section.num_train_epochs) * n_rows / max(per_step, 1))


def _offline_count(d, which: str) -> int:
    """Rows of a split when the data is not loaded: the known hub size (tasks/math.py) after the level
    filter, cut to dataset.n_train / n_test (0 = all), or the configured count alone."""
    from .tasks.math import known_split_size

    hub = d.hub_id if which == "train" else (d.test_hub_id or d.hub_id)
    known = known_split_size(hub, d.split if which == "train" else d.test_split, d.levels, d.subjects)
    wanted = int((d.n_train if which == "train" else d.n_test) or 0)
    start = int(d.train_start or 0) if which == "train" else 0
    if known is None:
        return wanted
    return min(wanted, max(known - start, 0)) if wanted else max(known - start, 0)


def _token_lengths(cfg: DictConfig, rows: list) -> dict:
    """Mean tokens per training example (prompt + target) and per prompt: from the rows when loaded
    (characters, / 4 for a subword tokenizer), else dataset.tokens_per_example (prompt: a quarter of it)."""
    per_char = 1.0 if cfg.model.builder else 0.25  # char models: one token per character
    loaded = [r for r in rows if isinstance(r, dict) and "prompt" in r]
    if loaded:
        prompt = sum(len(r["prompt"]) for r in loaded) / len(loaded) * per_char
        full = sum(len(r["prompt"]) + len(str(r.get("completion", ""))) for r in loaded) / len(loaded) * per_char
        return {"per_example": round(full, 1), "prompt": round(prompt, 1), "source": "data"}
    t = cfg.dataset.get("tokens_per_example")
    if t:
        return {"per_example": float(t), "prompt": float(t) / 4, "source": "dataset.tokens_per_example"}
    return {"per_example": None, "prompt": None, "source": None}


def plan(cfg: DictConfig) -> dict:
    """A dict describing what stage=pipeline would do for this config."""
    note = None
    try:
        pipe = Pipeline(cfg)  # builds the task (reads and checks data), loads no model
        train_rows = pipe.task.train_rows()
        test_rows = pipe.task.test_rows()
        task_name = pipe.task.name
    except (OSError, ConnectionError, DataError) as err:
        # Offline with a hub dataset: plan from the known split sizes and the configured counts.
        note = f"data not loaded ({type(err).__name__}: {str(err)[:120]}); counts from the config"
        pipe = Pipeline(cfg, task=_NoTask())
        train_rows = list(range(_offline_count(cfg.dataset, "train")))
        test_rows = list(range(_offline_count(cfg.dataset, "test")))
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
        info = {"strategy": s_cfg.name, "n": int(s_cfg.n), "k": s_cfg.k, "cache_key": branch_key(cfg, s_cfg),
                "estimator": s_cfg.get("estimator") or "surrogate", "k_schedule": s_cfg.get("k_schedule")}
        if o.name == "sft":
            info.update(objective="sft", rows=obj_rows, optimizer_steps=_steps(o, obj_rows, batch),
                        examples_per_step=batch)
        else:
            steps = _steps(o, obj_rows * o.num_generations, batch)
            rollouts = steps * batch
            info.update(objective="rl", rows=obj_rows, optimizer_steps=steps, prompts_per_step=batch // o.num_generations,
                        rollouts_per_prompt=o.num_generations, rollouts=rollouts,
                        max_completion_length=int(o.max_completion_length),
                        max_generated_tokens=rollouts * o.max_completion_length)
        branches[name] = info
    evals = (["warmup"] if cfg.eval.eval_warmup and w.enabled else []) + list(branches)
    samples = n_eval * cfg.eval.pool_size
    return {
        "experiment": cfg.run_name, "task": task_name, "model": cfg.model.name, "note": note,
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
        "tokens": _token_lengths(cfg, train_rows),
        "eval": {"models": evals, "pool_size": int(cfg.eval.pool_size), "budgets": list(cfg.eval.budgets),
                 "samples_per_model": samples, "samples_total": samples * len(evals),
                 "max_new_tokens": int(cfg.eval.max_new_tokens),
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


def format_plan(cfg: DictConfig, launcher: dict | None = None, sweep_params: dict | None = None) -> str:
    """The plan as text; ``launcher`` (main.launcher_processes) adds where the processes run, and
    ``sweep_params`` (hydra.sweeper.params) the size of the grid for its cost."""
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
        if b.get("estimator", "surrogate") != "surrogate":  # an RL estimator in place of the CAT weight
            k += f", estimator={b['estimator']}"
            if b.get("k_schedule") is not None:
                k += f", k_schedule={list(b['k_schedule'])}"
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
    throughput = {str(k): float(v) for k, v in (cfg.hardware.get("throughput") or {}).items()}
    stages = job_costs(p, throughput, eval_engine=str(cfg.eval.get("engine", "hf")),
                       rl_engine="vllm" if cfg.objective.get("use_vllm") else "hf")
    jobs, seeds = grid_size(sweep_params)
    lines += format_costs(stages, throughput, jobs, seeds, processes=launcher["processes"] if launcher else p["processes"]["count"],
                          timeout_min=launcher.get("timeout_min") if launcher else None)
    return "\n".join(lines)
