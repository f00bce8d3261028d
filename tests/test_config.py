"""Every config group composes through Hydra's compose API; bad values fail before any work."""

from __future__ import annotations

import pytest
from conftest import CONF, compose
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from cat_experiments.config import ConfigError, validate

GROUPS = ["model", "dataset", "strategy", "objective", "hardware", "eval", "logger"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, group
    for option in options:
        cfg = compose([f"{group}={option}"])
        assert cfg[group].name == option or group == "hardware" and cfg.hardware.name == option


def test_experiment_presets_compose():
    for preset in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = compose([f"experiment={preset}"])
        validate(cfg)
        assert cfg.experiment, preset


def test_default_is_the_embedded_cpu_demo():
    cfg = compose()
    validate(cfg)
    assert cfg.model.builder == "tiny_gpt2" and cfg.dataset.name == "arithmetic"
    assert cfg.strategy.name == "pass_at_n" and cfg.objective.name == "sft" and cfg.hardware.device == "cpu"
    assert cfg.baseline is True and cfg.stage == "pipeline"


def test_gpu_4bit_sets_quantisation():
    cfg = compose(["hardware=gpu_4bit"])
    assert cfg.hardware.load_in_4bit and cfg.hardware.device == "cuda" and cfg.hardware.dtype == "bfloat16"


def test_logger_tags_follow_the_choices():
    cfg = compose(["strategy=majority", "objective=rl"])
    assert list(cfg.logger.tags) == ["majority", "rl", "N=8"]


def test_typo_in_a_key_fails_at_composition():
    with pytest.raises(Exception) as err:
        compose(["strategy.nn=4"])
    assert "nn" in str(err.value)


def test_wrong_type_fails_at_composition():
    with pytest.raises((ValidationError, Exception)) as err:
        compose(["strategy.n=four"])
    assert "four" in str(err.value) or "n" in str(err.value)


@pytest.mark.parametrize("overrides,needle", [
    (["strategy.name=pass_at"], "strategy.name='pass_at'"),
    (["strategy.n=0"], "strategy.n=0"),
    (["strategy=majority", "strategy.k=9"], "strategy.k=9"),
    (["strategy=majority", "strategy.k=null"], "strategy.k=None"),
    (["strategy=standard", "strategy.n=4"], "strategy.n=4"),
    (["objective=rl", "objective.num_generations=1"], "objective.num_generations=1"),
    (["objective=rl", "objective.per_device_train_batch_size=12"], "per_device_train_batch_size=12"),
    (["strategy.p_estimator=unbiased", "strategy.weight_form=log"], "strategy.weight_form='log'"),
    (["eval.budgets=[1,128]"], "eval.budgets"),
    (["objective.reduction=mean"], "objective.reduction='mean'"),
    (["stage=deploy"], "stage='deploy'"),
    (["model.load_dtype=fp8"], "model.load_dtype='fp8'"),
])
def test_invalid_values_name_the_key(overrides, needle):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


def test_unknown_group_option_fails():
    with pytest.raises(Exception) as err:
        compose(["strategy=pass_at_m"])
    assert "pass_at_m" in str(err.value)


def test_structured_config_rejects_unknown_keys_in_code_too():
    cfg = compose()
    with pytest.raises((ConfigKeyError, ConfigAttributeError), match="nonexistent"):
        cfg.strategy.nonexistent = 1
