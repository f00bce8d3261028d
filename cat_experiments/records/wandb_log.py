"""Weights & Biases logging of runs, training curves and reports.

W&B is optional: :func:`init_wandb` returns ``None`` when disabled and every other W&B helper is a
no-op on ``None``. Mode ``"auto"`` honours ``WANDB_MODE`` when set, else goes offline when there is no
API key or api.wandb.ai is unreachable within 2 s, else online.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import branches_int, metric_budget_name, plain_copy, sorted_metrics

if TYPE_CHECKING:
    from .grid import Report
    from .paper import PaperTable

logger = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id"  # beside the run's records: a requeued job resumes its W&B run

__all__ = [
    "finish_wandb", "init_wandb", "log_report_wandb", "log_results_wandb", "make_wandb_callback", "resolve_wandb_mode",
]


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = (
        os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    )
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``"online" | "offline" | "disabled"`` for a configured mode (see the module docstring)."""
    mode = (mode or "auto").lower()
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        if env:
            mode = env
        elif not _has_api_key():
            logger.info("W&B: no API key (WANDB_API_KEY / ~/.netrc) -> offline")
            return "offline"
        elif not _reachable():
            logger.info("W&B: api.wandb.ai unreachable -> offline")
            return "offline"
        else:
            return "online"
    aliases = {
        "dryrun": "offline",
        "run": "online",
        "shared": "online",
        "false": "disabled",
        "none": "disabled",
    }
    mode = aliases.get(mode, mode)
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"unknown W&B mode {mode!r}; expected auto, online, offline or disabled")
    return mode


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def init_wandb(logger_cfg: Any, config: Mapping[str, Any] | None = None):
    """Start a W&B run from a logger config; ``None`` when disabled (or logger_cfg is None).

    ``logger_cfg`` keys: ``project``, ``entity`` (opt), ``mode`` (auto|online|offline|disabled),
    ``group``, ``tags`` (list), ``name`` (opt), ``dir`` (where the ``wandb/`` folder goes).
    The run never waits on the network in auto mode (see :func:`resolve_wandb_mode`); if an online
    start still fails, it retries offline. With a ``dir``, the run's id is kept in ``dir/wandb_run_id``
    and reused with ``resume="allow"``: a preempted and requeued job goes on logging into the same run.
    """
    if logger_cfg is None:
        return None
    mode = resolve_wandb_mode(_cfg_get(logger_cfg, "mode", "auto"))
    if mode == "disabled":
        return None
    import wandb

    run_dir = _cfg_get(logger_cfg, "dir")
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    tags = [str(t)[:64] for t in _cfg_get(logger_cfg, "tags", []) if t is not None and str(t)]
    kwargs = dict(
        project=_cfg_get(logger_cfg, "project"),
        entity=_cfg_get(logger_cfg, "entity"),
        group=_cfg_get(logger_cfg, "group"),
        name=_cfg_get(logger_cfg, "name"),
        tags=tags or None,
        dir=str(run_dir) if run_dir is not None else None,
        config=plain_copy(config) if config is not None else None,
        reinit="create_new",
        settings=wandb.Settings(init_timeout=60),
    )
    if run_dir is not None:
        id_file = Path(run_dir) / RUN_ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(6))  # W&B ids: lower-case letters and digits
        kwargs.update(id=id_file.read_text().strip(), resume="allow")
    try:
        return wandb.init(mode=mode, **kwargs)
    except Exception as exc:
        if mode != "online":
            raise
        logger.warning("W&B online start failed (%s); logging offline instead", exc)
        return wandb.init(mode="offline", **kwargs)


def finish_wandb(run) -> None:
    """``run.finish()``; no-op on None."""
    if run is not None:
        run.finish()


def log_results_wandb(
    run, results: Mapping[str, Any], run_dir: str | os.PathLike | None = None, prefix: str = "eval"
) -> None:
    """Log a run record to W&B: a line plot per metric (one series per branch), the full curves as a
    table, summary values ``{branch}/{metric@budget}`` (e.g. ``cat/pass@16``), scalar ``train_stats`` as
    ``train_stats/...`` summaries, and ``run_dir/scaling.png`` as an image. No-op when ``run`` is None."""
    if run is None:
        return
    import wandb

    branches = branches_int(results["branches"])
    table = wandb.Table(columns=["branch", "metric", "budget", "value"])
    payload: dict[str, Any] = {}
    metrics = sorted_metrics({m for curves in branches.values() for m in curves})
    for metric in metrics:
        names = [b for b, curves in branches.items() if curves.get(metric)]
        xs = [sorted(branches[b][metric]) for b in names]
        ys = [[branches[b][metric][k] for k in x] for b, x in zip(names, xs, strict=True)]
        if names:
            payload[f"{prefix}/{metric}"] = wandb.plot.line_series(
                xs=xs, ys=ys, keys=names, title=f"{metric} vs budget", xname="budget"
            )
    for branch, curves in branches.items():
        for metric in sorted_metrics(curves):
            for k, v in curves[metric].items():
                table.add_data(branch, metric, k, v)
                run.summary[f"{branch}/{metric_budget_name(metric, k)}"] = v
    payload[f"{prefix}/scaling_table"] = table
    if run_dir is not None and (Path(run_dir) / "scaling.png").is_file():
        payload[f"{prefix}/scaling_png"] = wandb.Image(str(Path(run_dir) / "scaling.png"))
    run.log(payload)
    for key, value in (results.get("train_stats") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            run.summary[f"train_stats/{key}"] = value


def make_wandb_callback(run, prefix: str):
    """A ``transformers.TrainerCallback`` logging the trainer's logs to ``run`` as ``{prefix}/{key}``
    against its own step metric ``{prefix}/step`` (the trainer's global step), so several trainers in
    one process can share one run. No-op when ``run`` is None. (Give the trainer ``report_to="none"``
    so that transformers' own W&B callback does not log twice.)"""
    from transformers import TrainerCallback

    class _WandbPrefixCallback(TrainerCallback):
        def __init__(self) -> None:
            self.run = run
            self.prefix = prefix
            if run is not None:
                run.define_metric(f"{prefix}/step")
                run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.run is None or not logs or not getattr(state, "is_world_process_zero", True):
                return
            data: dict[str, Any] = {}
            for key, value in logs.items():
                if hasattr(value, "item") and callable(value.item):
                    try:
                        value = value.item()
                    except (ValueError, RuntimeError):
                        continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                data[f"{self.prefix}/{key}"] = value
            if data:
                data[f"{self.prefix}/step"] = int(getattr(state, "global_step", 0) or 0)
                self.run.log(data)

    return _WandbPrefixCallback()


def log_report_wandb(
    report: Report,
    paths: dict[str, Path],
    tables: Sequence[PaperTable],
    *,
    project: str = "cat-experiments",
    mode: str = "auto",
    entity: str | None = None,
):
    """Log the report to a W&B run of its own (job_type report): the aggregated table, the paper
    comparison as a table and ``paper/{experiment}/{branch}/{column}`` summaries, and the plots.
    Offline without an API key or network (see resolve_wandb_mode). Returns the finished run
    (None when disabled)."""
    experiments = sorted({str(m.get("experiment")) for m in report.meta.values()})
    run = init_wandb(
        {
            "project": project,
            "entity": entity,
            "mode": mode,
            "dir": str(paths["md"].parent),
            "name": f"report-{'+'.join(experiments)}",
            "group": experiments[0] if len(experiments) == 1 else None,
            "tags": ["report", *experiments],
        },
        {"root": str(report.root), "sources": [str(p) for p in report.sources]},
    )
    if run is None:
        return None
    import wandb

    try:
        table = wandb.Table(columns=["label", "metric", "budget", "mean", "std", "n_seeds"])
        for lab in report.labels:
            for metric in sorted_metrics(report.stats[lab]):
                for budget, (mean, std, n) in report.stats[lab][metric].items():
                    table.add_data(lab, metric, budget, mean, std if math.isfinite(std) else None, n)
        payload: dict[str, Any] = {"report/table": table}
        if paths.get("png") and Path(paths["png"]).is_file():
            payload["report/plot"] = wandb.Image(str(paths["png"]))
        for t in tables:
            pt = wandb.Table(columns=["branch", "source", "metric", "budget", "value"])
            for row in t.rows:
                for i, (header, metric, budget) in enumerate(t.columns):
                    if row.ours is not None and row.ours[i] is not None:
                        pt.add_data(row.name, "ours", metric, budget, row.ours[i][0])
                        run.summary[f"paper/{t.experiment}/{row.name}/{header}"] = row.ours[i][0]
                    if row.paper is not None and i < len(row.paper) and row.paper[i] is not None:
                        pt.add_data(row.name, "paper", metric, budget, row.paper[i])
            payload[f"paper/{t.experiment}/table"] = pt
        if tables and paths.get("paper_png") and Path(paths["paper_png"]).is_file():
            payload["paper/plot"] = wandb.Image(str(paths["paper_png"]))
        run.log(payload)
    finally:
        run.finish()
    return run
