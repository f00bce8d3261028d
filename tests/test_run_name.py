"""The run name is `run_name`, not `experiment` (issue 23): `experiment=` on the command line picks a preset of
the `experiment` config group, `run_name=` names the output dirs, the W&B group and run and the SLURM job,
and results.json keeps the name under its "experiment" key (the records read it)."""

from __future__ import annotations

import pytest
from conftest import CONF, compose
from omegaconf.errors import ConfigAttributeError


def test_default_and_presets_set_the_run_name():
    assert compose().run_name == "demo"
    for preset in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = compose([f"experiment={preset}"])
        assert cfg.run_name == preset, preset
        assert "experiment" not in cfg, preset  # no field of that name: the group alone is `experiment`
        text = (CONF / "experiment" / f"{preset}.yaml").read_text()
        assert "\nexperiment:" not in text and f"\nrun_name: {preset}\n" in text, preset


def test_the_group_still_picks_a_preset_and_run_name_overrides_its_name():
    cfg = compose(["experiment=math_passn_sft", "run_name=mine"])
    assert cfg.model.name == "mistral7b_qlora" and cfg.strategy.name == "pass_at_n"  # the preset applied
    assert cfg.run_name == "mine"
    with pytest.raises(ConfigAttributeError, match="experiment"):
        cfg.experiment  # noqa: B018 -- the old field is gone, not silently empty


def test_run_name_names_dirs_wandb_and_slurm():
    cfg = compose(["run_name=lr_sweep", "hydra/launcher=slurm", "logger=wandb"], return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("outputs/lr_sweep/")
    assert cfg.hydra.sweep.dir.startswith("outputs/multirun/lr_sweep/")
    assert cfg.logger.group == "lr_sweep"
    assert cfg.hydra.launcher.name == "cat-lr_sweep"


def test_results_and_plan_keep_the_experiment_key(tmp_path):
    from cat_experiments.pipeline import Pipeline
    from cat_experiments.plan import plan

    cfg = compose(["run_name=lr_sweep", "logger=none", "dataset.n_train=64", "dataset.n_test=8",
                   f"cache_dir={tmp_path}"])
    assert plan(cfg)["experiment"] == "lr_sweep"
    assert Pipeline(cfg).describe_results({})["experiment"] == "lr_sweep"  # results.json's key
