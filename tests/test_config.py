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
        assert cfg.run_name, preset


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
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Error merging override strategy.n=four") as err:
        compose(["strategy.n=four"])
    # the cause: OmegaConf's type check, naming the value, the type it wanted and the key
    cause = err.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "Value 'four' of type 'str' could not be converted to Integer" in str(cause)
    assert "full_key: strategy.n" in str(cause)


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
    (["model=mistral7b_qlora", "model.path=/nonexistent/mistral"], "model.path='/nonexistent/mistral'"),
    (["model=mistral7b_qlora", "model.path=./checkpoints/none"], "model.path='./checkpoints/none'"),
    (["model=mistral7b_qlora", "model.path='~/nowhere/model'"], "model.path='~/nowhere/model'"),
    (["model=mistral7b_qlora", "model.path=outputs/cache/warmup/final"], "no such local directory"),
])
def test_invalid_values_name_the_key(overrides, needle):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


def test_hub_ids_and_existing_local_model_paths_pass(tmp_path):
    from cat_experiments.config import looks_local

    assert not looks_local("mistralai/Mistral-7B-Instruct-v0.2") and not looks_local("gpt2") and not looks_local(None)
    validate(compose(["model=mistral7b_qlora"]))  # a hub id: not checked (offline runs use the hub cache)
    validate(compose(["model=mistral7b_qlora", f"model.path={tmp_path}"]))
    validate(compose(["model.path=/nonexistent"]))  # a tiny model's builder ignores model.path


def test_unknown_group_option_fails():
    with pytest.raises(Exception) as err:
        compose(["strategy=pass_at_m"])
    assert "pass_at_m" in str(err.value)


def test_structured_config_rejects_unknown_keys_in_code_too():
    cfg = compose()
    with pytest.raises((ConfigKeyError, ConfigAttributeError), match="nonexistent"):
        cfg.strategy.nonexistent = 1


# ----------------------------------------------------------------------------- several processes (issue 10)


def test_process_batch_keeps_or_multiplies_the_global_batch():
    from cat_experiments.config import process_batch

    cfg = compose(["objective.per_device_train_batch_size=64"])
    assert process_batch(cfg.objective, cfg.hardware, 1) == (64, 1, 64)
    assert process_batch(cfg.objective, cfg.hardware, 4) == (16, 1, 64)
    cfg = compose(["objective.per_device_train_batch_size=2", "objective.gradient_accumulation_steps=2"])
    assert process_batch(cfg.objective, cfg.hardware, 2) == (2, 1, 4)  # the paper's 2 x 2 on two GPUs
    assert process_batch(cfg.objective, cfg.hardware, 4) == (1, 1, 4)
    cfg = compose(["objective.per_device_train_batch_size=4", "objective.gradient_accumulation_steps=6"])
    for world in (1, 2, 3, 4, 6, 8, 12, 24):  # always the same global step
        b, a, g = process_batch(cfg.objective, cfg.hardware, world)
        assert b * a * world == g == 24 and b <= 4
    cfg = compose(["objective.per_device_train_batch_size=64", "hardware.keep_global_batch=false"])
    assert process_batch(cfg.objective, cfg.hardware, 4) == (64, 1, 256)


@pytest.mark.parametrize("overrides,world,needles", [
    (["hardware=multi_gpu"], 2, ["hardware.num_processes=4", "starts 2 process"]),
    (["warmup.per_device_train_batch_size=6"], 4, ["warmup.per_device_train_batch_size=6", "multiple of 4"]),
    (["objective.per_device_train_batch_size=2", "objective.gradient_accumulation_steps=3"], 4,
     ["objective.per_device_train_batch_size=2", "gradient_accumulation_steps=3", "multiple of 4"]),
    (["objective=rl", "objective.per_device_train_batch_size=12", "objective.num_generations=4"], 8,
     ["objective.per_device_train_batch_size=12", "multiple of 8"]),
    (["objective=rl", "objective.per_device_train_batch_size=12", "objective.num_generations=8",
      "hardware.keep_global_batch=false"], 3, ["objective.num_generations=8", "on 3 processes is 36"]),
])
def test_world_size_checks_name_both_values(overrides, world, needles):
    from cat_experiments.config import validate_world

    with pytest.raises(ConfigError) as err:
        validate_world(compose(overrides), world)
    for needle in needles:
        assert needle in str(err.value)


def test_world_size_checks_pass_where_the_split_is_exact():
    from cat_experiments.config import validate_world

    validate_world(compose([]), 1)
    validate_world(compose(["hardware=multi_gpu"]), 4)
    validate_world(compose(["objective=rl"]), 2)  # 64 rollouts = 8 prompts x 8, 32 per process


def test_cache_keys_hold_the_global_batch_not_the_process_count():
    from cat_experiments.cache import branch_key, warmup_key

    one = compose([])
    kept = compose(["hardware.num_processes=4"])
    assert warmup_key(kept) == warmup_key(one) and branch_key(kept, kept.strategy) == branch_key(one, one.strategy)
    per_device = compose(["hardware.num_processes=4", "hardware.keep_global_batch=false"])
    assert warmup_key(per_device) != warmup_key(one)
    same_global = compose(["warmup.per_device_train_batch_size=512", "objective.per_device_train_batch_size=512"])
    assert warmup_key(per_device) == warmup_key(same_global)  # 4 x 128 keys as 1 x 512
    assert branch_key(per_device, per_device.strategy) == branch_key(same_global, same_global.strategy)


def test_slurm_dry_run_plans_processes_and_rejects_a_mismatch(tmp_path):
    """The SLURM command lines of the README, as dry runs (nothing is submitted without -m)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    def plan(*overrides):
        return subprocess.run([sys.executable, "-m", "cat_experiments.main", "experiment=math_passn_sft",
                               "hydra/launcher=slurm", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}",
                               *overrides], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    out = plan("hardware=multi_node", "hardware.num_processes=4", "hydra.launcher.nodes=2",
               "hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "processes: 4; per process batch x accumulation / global: warmup 1 x 1 / 4, branches 1 x 1 / 4" in out.stdout
    assert "launcher: slurm, 2 node(s) x 2 task(s), 2 GPU(s) per node = 4 process(es) per grid job" in out.stdout
    bad = plan("hardware=multi_gpu", "hydra.launcher.tasks_per_node=2")
    assert bad.returncode == 2
    assert "hardware.num_processes=4" in bad.stderr and "starts 2 process(es)" in bad.stderr


def test_accelerate_config_must_reach_accelerate_launch():
    from cat_experiments.config import validate_world

    cfg = compose(["hardware=multi_gpu", "hardware.accelerate_config=launchers/accelerate/fsdp.yaml"])
    validate_world(cfg, 4)  # a plan: nothing launched yet
    with pytest.raises(ConfigError, match="hardware.accelerate_config=.*accelerate launch"):
        validate_world(cfg, 4, env={})
    validate_world(cfg, 4, env={"ACCELERATE_USE_FSDP": "true"})


@pytest.mark.parametrize("name,kind", [("fsdp.yaml", "FSDP"), ("deepspeed_zero3.yaml", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file
    from conftest import ROOT

    config = load_config_from_file(str(ROOT / "launchers" / "accelerate" / name))
    assert config.distributed_type.value == kind and config.num_processes == 4


def _readme_scaling_commands() -> list[list[str]]:
    """The command lines of the README's "Scaling out" block, as Hydra overrides (launcher prefix dropped)."""
    import re
    import shlex

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text.split("## Scaling out", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if "cat_experiments.main" not in line:
            continue
        args = shlex.split(line.split("cat_experiments.main", 1)[1].replace("...", ""))
        out.append([a for a in args if a != "-m"])
    return out


def test_readme_scaling_commands_plan_cleanly(tmp_path):
    """Every command of the README's scaling section composes, validates and plans (dry run)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    commands = _readme_scaling_commands()
    assert len(commands) >= 6
    for args in commands:
        out = subprocess.run([sys.executable, "-m", "cat_experiments.main", *args, "dry_run=true",
                              f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 0, (args, out.stderr[-2000:])
        assert "  processes: " in out.stdout, args
        if any(a.startswith("hydra/launcher=slurm") for a in args):
            assert "  launcher: slurm" in out.stdout, args


def test_vllm_rollouts_with_qlora_stop_at_validation_naming_the_trl_issue():
    with pytest.raises(ConfigError) as err:
        validate(compose(["objective=rl", "objective.use_vllm=true", "model=tiny_mistral", "model.load_in_4bit=true"]))
    text = str(err.value)
    assert "objective.use_vllm" in text and "issues/4973" in text
    assert "bf16 LoRA with vLLM" in text and "QLoRA with HF generate" in text
    with pytest.raises(ConfigError, match="objective.use_vllm.*4973"):
        validate(compose(["objective=rl", "objective.use_vllm=true", "hardware=gpu_4bit"]))
    validate(compose(["objective=rl", "objective.use_vllm=true", "model=tiny_mistral"]))  # bf16 LoRA: fine
    with pytest.raises(ConfigError, match="objective.vllm_mode='remote'"):
        validate(compose(["objective=rl", "objective.use_vllm=true", "objective.vllm_mode=remote"]))


def test_grpo_config_hands_vllm_settings_to_trl(tmp_path):
    from cat_experiments.training.args import grpo_config

    cfg = compose(["objective=rl", "objective.use_vllm=true", "objective.vllm_gpu_memory_utilization=0.4",
                   "objective.temperature=0.8", "objective.logprob_temperature=1.0"])
    args = grpo_config(cfg.objective, tmp_path, cfg)
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.4
    assert args.vllm_importance_sampling_correction is False  # sampled at 0.8, scored at 1.0
    cfg = compose(["objective=rl", "objective.use_vllm=true"])
    assert grpo_config(cfg.objective, tmp_path, cfg).vllm_importance_sampling_correction is True


def test_eval_engine_is_validated():
    with pytest.raises(ConfigError, match="eval.engine='sglang'"):
        validate(compose(["eval.engine=sglang"]))


@pytest.mark.parametrize("overrides,k,penalty", [
    (["strategy=majority", "objective=rl"], 3, 0.5),  # all-wrong penalty; fixed k = 3 (beat dynamic k, demo study)
    (["strategy=majority", "objective=rl", "strategy.k=null"], None, 0.5),  # the paper's dynamic k
    (["strategy=majority"], 3, 0.0),  # SFT needs a fixed k
    (["strategy=majority", "objective=rl", "strategy.k=3", "objective.all_wrong_penalty=0"], 3, 0.0),
    (["strategy=pass_at_n", "objective=rl"], None, 0.0),  # no specialisation for other strategies
    (["experiment=math_majority_rl"], None, 0.5),
    (["experiment=math_majority_sft"], 4, 0.0),
])
def test_majority_rl_specialisation(overrides, k, penalty):
    cfg = compose(overrides)
    validate(cfg)
    assert cfg.strategy.k == k
    assert cfg.objective.all_wrong_penalty == penalty


def test_rl_on_arithmetic_starts_from_the_mixed_task_and_other_datasets_are_untouched():
    rl = compose(["objective=rl"])
    assert list(rl.dataset.mix) == ["2*2", "3*1"] and rl.dataset.n_train == 6000 and rl.warmup.max_steps == 1000
    sft = compose([])
    assert sft.dataset.mix is None and sft.dataset.n_train == 2000 and sft.warmup.max_steps == 600
    # command-line overrides win over the specialisation
    assert compose(["objective=rl", "dataset.mix=null", "warmup.max_steps=5"]).warmup.max_steps == 5
    # presets on other datasets keep their own values
    for preset in ("math_passn_rl", "protein_unconditional_tiny"):
        cfg = compose([f"experiment={preset}"])
        assert cfg.dataset.get("mix") is None and cfg.dataset.name != "arithmetic"


def test_settings_added_later_move_the_keys_they_shape():
    """(The hand-kept list of fields added later is replaced by cache.KEY_VERSION; tests/test_cache_keys.py.)"""
    from cat_experiments.cache import branch_key, warmup_key

    cfg = compose([])
    mixed = compose(["dataset.mix=[2*2,3*1]"])
    assert warmup_key(mixed) != warmup_key(cfg)
    loo = compose(["strategy=majority", "objective=rl", "strategy.estimator=loo"])
    surrogate = compose(["strategy=majority", "objective=rl"])
    assert branch_key(loo, loo.strategy) != branch_key(surrogate, surrogate.strategy)
