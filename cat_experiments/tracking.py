"""Run records, scaling plots and Weights & Biases logging (no model code).

A run's record lives in its run dir:

- ``results.json``: ``{"experiment", "strategy", "target_n", "seed", "objective", "task", "pool_size",
  "branches": {branch: {metric: {budget: value}}}, "train_stats"?, "config"?}`` (budgets are string
  keys in JSON; :func:`load_results` turns them back into ints),
- ``scaling.csv``: one row ``branch,metric,budget,value`` per point,
- ``scaling.png``: one panel per metric, value against budget (log2 axis), one line per branch.

The report (``python -m cat_experiments.report``) reads only these records.

W&B is optional: :func:`init_wandb` returns ``None`` when disabled and every other W&B helper is a
no-op on ``None``. Mode ``"auto"`` honours ``WANDB_MODE`` when set, else goes offline when there is no
API key or api.wandb.ai is unreachable within 2 s, else online.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import netrc
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_KEYS",
    "finish_wandb",
    "init_wandb",
    "load_results",
    "log_results_wandb",
    "make_wandb_callback",
    "metric_budget_name",
    "plot_scaling",
    "resolve_wandb_mode",
    "write_records",
]

REQUIRED_KEYS = ("experiment", "strategy", "target_n", "seed", "objective", "task", "pool_size", "branches")
_METRIC_ORDER = ("pass@k", "maj@k", "max@k")
_METRIC_YLABEL = {"pass@k": "pass@k", "maj@k": "maj@k (exact)", "max@k": "expected max reward"}


# ----------------------------------------------------------------------------- helpers


def _plain(obj: Any) -> Any:
    """A JSON-friendly copy: OmegaConf containers, numpy scalars/arrays, Paths, tuples -> plain types."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return _plain(OmegaConf.to_container(obj, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar / array, torch tensor
        return obj.tolist()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def _atomic_write(path: Path, writer, mode: str = "w") -> None:
    """Write ``path`` via a temp file in the same dir + os.replace (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            writer(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _sorted_metrics(metrics) -> list[str]:
    known = [m for m in _METRIC_ORDER if m in metrics]
    return known + sorted(m for m in metrics if m not in _METRIC_ORDER)


def _branches_int(branches: Mapping[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """Budgets as ints and values as floats (accepts the string keys of JSON)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for branch, metrics in branches.items():
        out[str(branch)] = {
            str(metric): {int(b): float(v) for b, v in sorted(curve.items(), key=lambda kv: int(kv[0]))}
            for metric, curve in metrics.items()
        }
    return out


def metric_budget_name(metric: str, budget: int) -> str:
    """``("pass@k", 16) -> "pass@16"`` (metrics not ending in ``@k`` get ``@16`` appended)."""
    return f"{metric[:-2]}@{budget}" if metric.endswith("@k") else f"{metric}@{budget}"


# ----------------------------------------------------------------------------- records


def write_records(run_dir: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``results.json``, ``scaling.csv`` and ``scaling.png`` into ``run_dir``; returns their paths."""
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise ValueError(f"results is missing key(s) {missing}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    branches = _branches_int(results["branches"])
    record = _plain({k: v for k, v in results.items() if k != "branches"})
    record["branches"] = {
        b: {m: {str(k): v for k, v in curve.items()} for m, curve in metrics.items()}
        for b, metrics in branches.items()
    }
    paths = {"json": run_dir / "results.json", "csv": run_dir / "scaling.csv", "png": run_dir / "scaling.png"}
    text = json.dumps(record, indent=2, allow_nan=True)
    _atomic_write(paths["json"], lambda fh: fh.write(text + "\n"))

    def _csv(fh):
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["branch", "metric", "budget", "value"])
        for b, metrics in branches.items():
            for m in _sorted_metrics(metrics):
                for k, v in metrics[m].items():
                    w.writerow([b, m, k, repr(float(v))])

    _atomic_write(paths["csv"], _csv)
    title = (
        f"{results['experiment']}: {results['strategy']} N={results['target_n']} "
        f"({results['objective']}), seed {results['seed']}"
    )
    plot_scaling(branches, paths["png"], title)
    return paths


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one inside a run dir), with int budget keys."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["branches"] = _branches_int(data.get("branches", {}))
    return data


def plot_scaling(
    branches: Mapping[str, Mapping[str, Mapping[int, float]]],
    path: str | os.PathLike,
    title: str = "",
    errors: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
) -> Path:
    """One panel per metric: value vs budget (log2 x axis), a line with markers per branch.

    ``errors`` (same shape as ``branches``, e.g. a std over seeds) draws a shaded band.
    Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    branches = _branches_int(branches)
    metrics = _sorted_metrics({m for curves in branches.values() for m in curves})
    n = max(1, len(metrics))
    fig = Figure(figsize=(4.8 * n, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        all_k: set[int] = set()
        for label, curves in branches.items():
            curve = curves.get(metric)
            if not curve:
                continue
            ks = sorted(curve)
            ys = [curve[k] for k in ks]
            all_k.update(ks)
            (line,) = ax.plot(ks, ys, marker="o", markersize=4, label=label)
            err = (errors or {}).get(label, {}).get(metric)
            if err:
                e = [float(err.get(k, float("nan"))) for k in ks]
                if any(math.isfinite(x) for x in e):
                    lo = [y - (x if math.isfinite(x) else 0.0) for y, x in zip(ys, e, strict=True)]
                    hi = [y + (x if math.isfinite(x) else 0.0) for y, x in zip(ys, e, strict=True)]
                    ax.fill_between(ks, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
        if all_k and max(all_k) > min(all_k):
            ax.set_xscale("log", base=2)
            ticks = sorted(all_k)
            if len(ticks) > 12:  # dense budgets: label the powers of two only
                ticks = [2**e for e in range(max(all_k).bit_length()) if min(all_k) <= 2**e <= max(all_k)]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(round(x))}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("budget k")
        ax.set_ylabel(_METRIC_YLABEL.get(metric, metric))
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    _atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")
    return path


# ----------------------------------------------------------------------------- W&B


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
    start still fails, it retries offline.
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
        config=_plain(config) if config is not None else None,
        reinit="create_new",
        settings=wandb.Settings(init_timeout=60),
    )
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

    branches = _branches_int(results["branches"])
    table = wandb.Table(columns=["branch", "metric", "budget", "value"])
    payload: dict[str, Any] = {}
    metrics = _sorted_metrics({m for curves in branches.values() for m in curves})
    for metric in metrics:
        names = [b for b, curves in branches.items() if curves.get(metric)]
        xs = [sorted(branches[b][metric]) for b in names]
        ys = [[branches[b][metric][k] for k in x] for b, x in zip(names, xs, strict=True)]
        if names:
            payload[f"{prefix}/{metric}"] = wandb.plot.line_series(
                xs=xs, ys=ys, keys=names, title=f"{metric} vs budget", xname="budget"
            )
    for branch, curves in branches.items():
        for metric in _sorted_metrics(curves):
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


def summary_table(results: Mapping[str, Any]) -> str:
    """A markdown table of one run: rows = branches, columns = metric@budget."""
    branches = _branches_int(results["branches"])
    cols = sorted({(m, b) for curves in branches.values() for m, c in curves.items() for b in c},
                  key=lambda mb: (["pass@k", "maj@k", "max@k"].index(mb[0]) if mb[0] in ("pass@k", "maj@k", "max@k")
                                  else 9, mb[0], mb[1]))
    head = "| branch | " + " | ".join(metric_budget_name(m, b) for m, b in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for name, curves in branches.items():
        cells = [f"{curves[m][b]:.3f}" if b in curves.get(m, {}) else "" for m, b in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
