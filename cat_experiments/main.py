"""Entry point: `python -m cat_experiments.main [overrides]` (Hydra).

    stage=pipeline (default)  warmup -> CAT branch (+ standard branch if baseline=true) -> scaling sweep
    stage=warmup|train|eval   one stage (eval needs the trained branches of the same config)
    dry_run=true              print the plan: reads (and checks) the data, loads no model
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, register_configs
from .hub import HubError, hub_needs
from .tasks.base import DataError

register_configs()
log = logging.getLogger("cat_experiments")


def launcher_processes(launcher: Any) -> dict | None:
    """What a submitit launcher (Hydra's slurm / submitit_local) will start for each grid point:
    {"name", "nodes", "tasks_per_node", "gpus_per_node", "processes", "timeout_min"}; None for the basic
    launcher."""
    if launcher is None or "tasks_per_node" not in launcher:
        return None
    nodes, tasks = int(launcher.get("nodes") or 1), int(launcher.tasks_per_node or 1)
    name = str(launcher.get("_target_", "")).rsplit(".", 1)[-1].replace("Launcher", "").lower() or "submitit"
    timeout = launcher.get("timeout_min")
    return {"name": name, "nodes": nodes, "tasks_per_node": tasks, "gpus_per_node": launcher.get("gpus_per_node"),
            "processes": nodes * tasks, "timeout_min": int(timeout) if timeout else None}


def run(cfg: DictConfig, run_dir: str | Path | None = None, launcher: dict | None = None,
        sweep_params: dict | None = None) -> dict | None:
    """Everything main does, callable from tests with a composed config. Under several processes
    (torchrun, accelerate launch, a multi-task SLURM job) every rank calls it; the main rank alone
    writes the records and logs to W&B, and returns the results (the others return None).
    ``launcher``: what launcher_processes() read from Hydra's launcher config, checked and planned;
    ``sweep_params``: the preset's grid (hydra.sweeper.params), for the plan's cost of the whole grid."""
    from .config import validate, validate_world
    from .plan import format_plan

    validate(cfg)
    if launcher is not None:
        validate_world(cfg, launcher["processes"], source=f"hydra.launcher ({launcher['nodes']} node(s) x "
                                                          f"{launcher['tasks_per_node']} task(s))")
    if cfg.dry_run:
        print(format_plan(cfg, launcher, sweep_params))
        return None
    from . import distributed as dist
    from . import records
    from .models import device_for
    from .pipeline import Pipeline

    dist.init(cpu=device_for(cfg.hardware).type == "cpu", timeout_min=cfg.hardware.dist_timeout_min)
    # any rank's exception ends every rank within seconds, with its traceback in the log
    with dist.fail_together():
        validate_world(cfg, dist.world_size(), env=dict(os.environ))
        run_dir = Path(dist.broadcast(str(run_dir or cfg.run_dir or ".")))  # the main rank's Hydra dir for all
        wandb_run = None
        if dist.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.logger.name == "wandb":
                logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True)
                logger_cfg["dir"] = str(run_dir)
                logger_cfg["name"] = f"{cfg.run_name}-{cfg.strategy.name}-N{cfg.strategy.n}-s{cfg.seed}"
                wandb_run = records.init_wandb(logger_cfg, OmegaConf.to_container(cfg, resolve=True))
        try:
            pipeline = Pipeline(cfg, callbacks_for=lambda prefix: [records.make_wandb_callback(wandb_run, prefix)])
            results = pipeline.run()
            if results is None or not dist.is_main():
                return None
            records.write_records(run_dir, results)
            records.log_results_wandb(wandb_run, results, run_dir=run_dir)
            log.info("results in %s:\n%s", run_dir, records.summary_table(results))
            return results
        finally:
            if wandb_run is not None:
                wandb_run.finish()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        hydra_cfg = HydraConfig.get()
        sweep = hydra_cfg.get("sweeper", {}).get("params")
        run(cfg, run_dir=hydra_cfg.runtime.output_dir, launcher=launcher_processes(hydra_cfg.get("launcher")),
            sweep_params=dict(sweep) if sweep else None)
    except (ConfigError, DataError, FileNotFoundError, HubError) as err:
        message = str(err)
        if isinstance(err, HubError) and (needs := hub_needs(cfg)):  # everything else the run will want too
            message += f" This config takes from the hub: {', '.join(needs)}."
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
