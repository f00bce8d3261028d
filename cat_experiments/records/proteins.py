"""Protein runs: sample a finished run's cached checkpoints and plot their hydrophobic-fraction
distributions over the reward (``python -m cat_experiments.report plot-h RUN_DIR``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..cache import DONE, branch_key, cache_root, warmup_key
from ..evaluation.sampling import sample_pools
from ..evaluation.sweep import scaling_curves, score_pools
from ..models import load_model_and_tokenizer, resolve_model_path
from ..models.protein import sample_stats
from ..pipeline import Pipeline
from ..tasks import build_task
from ..tasks.protein import clean_sequence, hydrophobic_fraction, is_valid_sequence
from ..training.data import eval_prompts
from .grid import branch_label
from .plots import plot_h_distributions

__all__ = ["branch_checkpoints", "plot_h_for_run"]


def branch_checkpoints(cfg) -> dict[str, str]:
    """The cached checkpoints of a run's config: base (or warmup) and every finished branch."""
    cache = cache_root(cfg)
    out: dict[str, str] = {}
    if cfg.warmup.enabled:
        final = cache / "warmup" / warmup_key(cfg) / "final"
        if (final / DONE).exists():
            out["warmup"] = str(final)
    else:
        out["base"] = resolve_model_path(cfg.model, cache)
    pipe = Pipeline.__new__(Pipeline)  # branches() only reads cfg
    pipe.cfg = cfg
    for name, s_cfg in pipe.branches().items():
        final = cache / "branches" / f"{name}-{branch_key(cfg, s_cfg)}" / "final"
        if (final / DONE).exists():
            out[name] = str(final)
    return out


def plot_h_for_run(run_dir: str | Path, n_samples: int | None = None, out: str | Path | None = None,
                   seed: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Sample from a run's cached checkpoints (base/warmup and each branch) with the eval sampling settings
    and plot their h distributions; also writes h_stats.json. Returns (png path, stats)."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.create(record["config"])
    task = build_task(cfg.dataset)
    e = cfg.eval
    seed = int(cfg.seed) if seed is None else seed
    conditional = task.name == "protein_conditional"
    rows = task.test_rows()
    if conditional and e.num_problems:
        rows = rows[: int(e.num_problems)]
    per_prompt = int(n_samples or (e.pool_size if conditional else max(512, e.pool_size)))
    samples: dict[str, list[str]] = {}
    inputs: dict[str, list[str]] = {}
    stats: dict[str, Any] = {}
    for name, path in branch_checkpoints(cfg).items():
        model, tok = load_model_and_tokenizer(cfg.model, cfg.hardware, cache_root(cfg), path=path, for_training=False)
        prompts = eval_prompts(tok, rows, cfg.model.use_chat_template)
        pools = sample_pools(model, tok, prompts, per_prompt, max_new_tokens=e.max_new_tokens,
                             temperature=e.temperature, top_p=e.top_p, top_k=e.top_k, batch_size=e.batch_size,
                             seed=seed, progress=False)
        samples[name] = [c for pool in pools for c in pool]
        inputs[name] = [r.get("input", "") for r, pool in zip(rows, pools, strict=True) for _ in pool]
        scores = score_pools(task, rows, pools)
        rewards = [sc.reward for pool in scores for sc in pool]
        stats[name] = {"mean_reward": sum(rewards) / len(rewards), "n": len(rewards), "checkpoint": path,
                       "max@k": scaling_curves(task, rows, scores, [b for b in e.budgets if b <= per_prompt])["max@k"]}
        if not conditional:
            stats[name].update(sample_stats(samples[name]))
        else:  # the error from the target composition, over valid outputs
            errs = [hydrophobic_fraction(c) - (1 - hydrophobic_fraction(i))
                    for c, i in zip(samples[name], inputs[name], strict=True)
                    if len(clean_sequence(c)) >= 5 and is_valid_sequence(clean_sequence(c))]
            mean = sum(errs) / max(1, len(errs))
            stats[name].update({
                "valid_share": len(errs) / len(samples[name]), "err_mean": mean,
                "err_std": (sum((x - mean) ** 2 for x in errs) / max(1, len(errs) - 1)) ** 0.5,
                "abs_err_mean": sum(abs(x) for x in errs) / max(1, len(errs))})
    title = (f"{record.get('experiment')}: {record.get('strategy')} N={record.get('target_n')}, "
             f"seed {record.get('seed')}")
    png = Path(out) if out else run_dir / "h_distribution.png"
    labels = {name: _label(name, record) for name in samples}
    plot_h_distributions({labels[k]: v for k, v in samples.items()}, png,
                         "conditional" if conditional else "unconditional",
                         {labels[k]: v for k, v in inputs.items()}, title)
    (png.with_name(png.stem + "_stats.json")).write_text(json.dumps(stats, indent=2))
    return png, stats


def _label(name: str, record: Mapping[str, Any]) -> str:
    if name == "base":
        return "base (pretrained)"
    if name == "warmup":
        return "warmup (CE)"
    return branch_label(name, record.get("strategy"), record.get("target_n"))
