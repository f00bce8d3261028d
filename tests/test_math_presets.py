"""The four MATH presets (paper Tables 2-5): every hyperparameter of method.md's table, the branch grid
as one Hydra multirun from a shared warmup, dry-run plans, and shrunk end-to-end runs on CPU with the
tiny Mistral (model=tiny_mistral) standing in for Mistral-7B-Instruct (data: the offline MATH-500 file)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import CONF, MATH500, ROOT, compose
from omegaconf import OmegaConf

from cat_experiments.cache import branch_key, standard_strategy_cfg, warmup_key
from cat_experiments.config import validate

PRESETS = ("math_passn_sft", "math_majority_sft", "math_passn_rl", "math_majority_rl")
LOCAL_DATA = [f"dataset.path={MATH500}", f"dataset.test_path={MATH500}"]
# Row ranges that fit the 500-row local file (238 rows at levels 1-3) for the RL presets' plans.
LOCAL_RANGES = {"math_passn_rl": ["warmup.num_examples=400", "objective.data_start=400", "objective.num_examples=100"],
                "math_majority_rl": ["warmup.num_examples=200", "objective.data_start=200", "objective.num_examples=38"]}
# Shrunk sizes: the tiny Mistral on CPU, a few steps, a few problems, tiny pools.
SHRINK = ["model=tiny_mistral", "hardware=cpu", "hardware.num_threads=2", "logger=none", *LOCAL_DATA,
          "dataset.n_test=2", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
          "warmup.max_steps=2", "warmup.per_device_train_batch_size=2", "warmup.gradient_accumulation_steps=1",
          "warmup.num_examples=8", "objective.max_steps=2", "objective.gradient_accumulation_steps=1",
          "eval.pool_size=4", "eval.budgets=[1,2,4]", "eval.max_new_tokens=8", "eval.batch_size=64"]
SHRINK_SFT = ["dataset.n_train=16", "objective.per_device_train_batch_size=2", "objective.num_examples=8"]
SHRINK_RL = ["objective.data_start=8", "objective.num_examples=4", "objective.max_completion_length=8"]
SHRINK_BY_PRESET = {
    "math_passn_sft": SHRINK_SFT,
    "math_majority_sft": SHRINK_SFT,
    "math_passn_rl": [*SHRINK_RL, "objective.per_device_train_batch_size=8"],   # 2 prompts x 4 rollouts
    "math_majority_rl": [*SHRINK_RL, "objective.per_device_train_batch_size=16"],  # 2 prompts x 8 rollouts
}


def sweep_jobs(preset: str) -> list[list[str]]:
    """The override lists of the preset's multirun grid (hydra.sweeper.params)."""
    params = compose([f"experiment={preset}"], return_hydra_config=True).hydra.sweeper.params
    assert params and len(params) == 1, params
    (key, values), = params.items()
    return [[f"{key}={v.strip()}"] for v in str(values).split(",")]


# ---- the presets carry the paper's table ------------------------------------------------------------

def test_presets_start_with_the_global_package_line():
    for preset in PRESETS:
        assert (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()[0] == "# @package _global_"
    for branch in ("maj8k3", "maj16k4", "maj64k26"):
        assert (CONF / "branch" / f"{branch}.yaml").read_text().splitlines()[0] == "# @package _global_"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_model_and_hardware(preset):
    cfg = compose([f"experiment={preset}"])
    validate(cfg)
    assert cfg.run_name == preset and cfg.baseline is True
    assert cfg.model.name == "mistral7b_qlora" and cfg.model.path == "mistralai/Mistral-7B-Instruct-v0.2"
    assert cfg.model.load_in_4bit and cfg.model.bnb_4bit_quant_type == "nf4" and cfg.model.bnb_4bit_use_double_quant
    assert cfg.model.gradient_checkpointing and cfg.model.use_chat_template
    assert cfg.hardware.name == "gpu_4bit" and cfg.hardware.device == "cuda" and cfg.hardware.dtype == "bfloat16"
    lora = (cfg.model.lora.r, cfg.model.lora.alpha, list(cfg.model.lora.target_modules))
    if preset.endswith("_sft"):
        assert lora == (16, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    else:
        assert lora == (16, 32, ["q_proj", "v_proj"])
    for section in (cfg.warmup, cfg.objective):  # epoch-based
        assert section.max_steps == -1
    assert cfg.dataset.name == "math" and cfg.warmup.enabled and cfg.eval.eval_warmup


def eff_batch(section) -> int:
    return section.per_device_train_batch_size * section.gradient_accumulation_steps


def test_math_passn_sft_table2():
    c = compose(["experiment=math_passn_sft"])
    d, w, o, s, e = c.dataset, c.warmup, c.objective, c.strategy, c.eval
    assert (d.target, d.n_train, d.train_start, d.levels, d.n_test) == ("answer", 5000, 0, None, 500)
    assert d.test_hub_id == "HuggingFaceH4/MATH-500"
    assert (w.num_train_epochs, w.data_start, w.num_examples) == (2, 0, 5000)
    assert (o.name, o.num_train_epochs, o.data_start, o.num_examples) == ("sft", 3, 0, 5000)
    for sec in (w, o):
        assert (sec.learning_rate, sec.lr_scheduler_type, eff_batch(sec), sec.max_grad_norm, sec.reduction) == \
            (5e-6, "linear", 4, 0.3, "sequence_mean")
    assert s.name == "pass_at_n"
    assert (e.pool_size, list(e.budgets), e.temperature, e.top_p) == (64, [1, 2, 4, 8, 16, 32, 64], 0.8, 0.95)
    assert sweep_jobs("math_passn_sft") == [["strategy.n=4"], ["strategy.n=16"], ["strategy.n=64"]]


def test_math_majority_sft_table3():
    c = compose(["experiment=math_majority_sft"])
    d, w, o, s, e = c.dataset, c.warmup, c.objective, c.strategy, c.eval
    assert (d.target, list(d.levels), d.n_train, d.n_test) == ("solution", [1, 2, 3], 0, 0)  # 0 = all
    assert d.test_hub_id == "EleutherAI/hendrycks_math" and d.test_split == "test" and len(d.test_hub_configs) == 7
    assert (w.num_train_epochs, o.num_train_epochs, o.name) == (2, 3, "sft")
    for sec in (w, o):
        assert (sec.learning_rate, sec.lr_scheduler_type, eff_batch(sec), sec.max_grad_norm, sec.reduction) == \
            (5e-6, "linear", 4, 0.3, "token_mean")
    assert s.name == "majority" and s.k is not None
    assert (e.pool_size, list(e.budgets), e.temperature, e.top_p) == (128, [1, 2, 4, 8, 16, 32, 64, 128], 0.8, 0.95)
    jobs = sweep_jobs("math_majority_sft")
    assert jobs == [["+branch=maj8k3"], ["+branch=maj16k4"], ["+branch=maj64k26"]]
    pairs = []
    for job in jobs:
        cfg = compose(["experiment=math_majority_sft", *job])
        validate(cfg)
        pairs.append((cfg.strategy.n, cfg.strategy.k))
    assert pairs == [(8, 3), (16, 4), (64, 26)]


def test_math_passn_rl_table4():
    c = compose(["experiment=math_passn_rl"])
    d, w, o, s, e = c.dataset, c.warmup, c.objective, c.strategy, c.eval
    assert (d.target, d.n_train, d.levels, d.n_test, d.test_hub_id) == ("solution", 2500, None, 500, "HuggingFaceH4/MATH-500")
    assert (w.num_train_epochs, w.data_start, w.num_examples) == (1, 0, 2000)  # warmup: the first 2,000
    assert (o.data_start, o.num_examples, o.num_train_epochs) == (2000, 500, 1)  # RL: the next 500
    assert (o.name, o.num_generations, eff_batch(o) // o.num_generations) == ("rl", 4, 4)  # M=4, 4 prompts/step
    assert (o.learning_rate, o.beta, o.max_completion_length, o.temperature, o.top_p) == (1e-6, 0.05, 300, 0.8, 0.95)
    assert o.all_wrong_penalty == 0.0
    assert (s.name, s.weight_form, s.clip, s.mean_normalize, s.p_estimator) == ("pass_at_n", "log", 50.0, False, "sequence")
    assert (e.pool_size, list(e.budgets), e.temperature, e.top_p) == (32, [1, 2, 4, 8, 16, 32], 0.7, 0.9)
    assert sweep_jobs("math_passn_rl") == [["strategy.n=4"], ["strategy.n=16"]]


def test_math_majority_rl_table5():
    c = compose(["experiment=math_majority_rl"])
    d, w, o, s, e = c.dataset, c.warmup, c.objective, c.strategy, c.eval
    assert (d.target, list(d.levels), d.n_train, d.n_test) == ("solution", [1, 2, 3], 2300, 0)
    assert d.test_hub_id == "EleutherAI/hendrycks_math"
    assert (w.num_train_epochs, w.learning_rate, w.data_start, w.num_examples) == (3, 2e-5, 0, 2000)
    assert (o.data_start, o.num_examples) == (2000, 300)
    assert (o.name, o.num_generations, eff_batch(o) // o.num_generations) == ("rl", 8, 4)  # M=8, 4 prompts/step
    assert (o.learning_rate, o.beta, o.all_wrong_penalty, o.max_completion_length) == (1e-6, 0.0, 0.5, 512)
    assert (s.name, s.k, s.weight_form, s.clip, s.mean_normalize) == ("majority", None, "raw", 10.0, True)
    assert (e.pool_size, list(e.budgets), e.temperature, e.top_p) == (16, [1, 4, 8, 16], 0.7, 0.9)
    assert sweep_jobs("math_majority_rl") == [["strategy.n=4"], ["strategy.n=8"]]


@pytest.mark.parametrize("preset", PRESETS)
def test_grid_jobs_share_one_warmup_and_one_standard_branch(preset):
    cfgs = [compose([f"experiment={preset}", *job]) for job in sweep_jobs(preset)]
    for cfg in cfgs:
        validate(cfg)
    assert len({warmup_key(c) for c in cfgs}) == 1
    assert len({branch_key(c, standard_strategy_cfg()) for c in cfgs}) == 1
    assert len({branch_key(c, c.strategy) for c in cfgs}) == len(cfgs)  # one CAT branch per job


@pytest.mark.parametrize("preset", PRESETS)
def test_slurm_launcher_composes_with_the_preset(preset):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose([f"experiment={preset}", "hydra/launcher=slurm", "hydra.launcher.partition=a100"],
                  return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.nodes) == ("a100", 1, 1)
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0 and launcher.name == f"cat-{preset}"
    assert cfg.hydra.sweeper.params  # the branch grid is still there


def test_launcher_script_submits_each_grid_to_slurm():
    script = ROOT / "launchers" / "submit_math_grids.sh"
    env = {**os.environ, "ECHO": "1", "PARTITION": "a100", "ACCOUNT": "proj", "TIME_math_passn_rl": "90"}
    out = subprocess.run(["bash", str(script), *PRESETS, "--", "seed=1"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4
    for preset, line in zip(PRESETS, lines, strict=True):
        words = line.split()
        assert words[1:4] == ["-m", "cat_experiments.main", "-m"] and f"experiment={preset}" in words
        overrides = words[words.index("-m", 2) + 1:]
        cfg = compose(overrides, return_hydra_config=True)  # the submitted command composes
        validate(cfg)
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "a100"
        assert cfg.hydra.launcher.account == "proj" and cfg.seed == 1 and cfg.hydra.launcher.max_num_timeout == 3
        assert cfg.hydra.launcher.timeout_min == (90 if preset == "math_passn_rl" else
                                                  {"math_majority_sft": 2880}.get(preset, 1440))
    bad = subprocess.run(["bash", str(script), "math_nope"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown grid" in bad.stderr


# ---- dry runs: the full plan, no model ---------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_prints_the_plan_without_a_model(preset, tmp_path, capsys, monkeypatch):
    import cat_experiments.models as models
    import cat_experiments.pipeline as pipeline
    from cat_experiments.main import run

    def no_model(*args, **kwargs):
        raise AssertionError("dry_run loaded a model")

    # patch the names where they are used too (pipeline imported them before the patch), and nowhere leak
    for module, name in [(models, "load_model"), (models, "resolve_model_path"), (models, "load_model_and_tokenizer"),
                         (pipeline, "resolve_model_path"), (pipeline, "load_model_and_tokenizer")]:
        monkeypatch.setattr(module, name, no_model)
    for job in sweep_jobs(preset):
        cfg = compose([f"experiment={preset}", *job, "dry_run=true", *LOCAL_DATA, *LOCAL_RANGES.get(preset, []),
                       f"cache_dir={tmp_path / 'cache'}"])
        assert run(cfg) is None
        out = capsys.readouterr().out
        assert f"plan for experiment '{preset}' (task math, model mistral7b_qlora)" in out
        assert "stages: warmup -> train -> eval" in out and "branch standard:" in out and "branch cat:" in out
        assert f"pool {cfg.eval.pool_size} per problem, budgets {list(cfg.eval.budgets)}" in out
        if preset.endswith("_rl"):
            m = cfg.objective.num_generations
            assert f"4 prompts x {m} rollouts" in out
        else:
            assert "of 4 examples" in out
        name = {"pass_at_n": "pass_at_n", "majority": "majority"}[cfg.strategy.name]
        k = f", k={cfg.strategy.k}" if cfg.strategy.k is not None else ""
        assert f"branch cat: {cfg.objective.name} {name}(N={cfg.strategy.n}{k})" in out
    assert not (tmp_path / "cache").exists()  # nothing built, nothing trained


# ---- end to end on CPU, shrunk --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_end_to_end_on_cpu(preset, tmp_path):
    from cat_experiments.main import run
    from cat_experiments.records import load_results

    extra = ["model.load_in_4bit=true"] if preset == "math_passn_sft" else []  # the QLoRA path, 4-bit on CPU
    cfg = compose([f"experiment={preset}", *SHRINK, *SHRINK_BY_PRESET[preset], *extra,
                   f"cache_dir={tmp_path / 'cache'}"])
    start = time.time()
    results = run(cfg, run_dir=tmp_path / "run")
    elapsed = time.time() - start
    assert set(results["branches"]) == {"warmup", "standard", "cat"}
    for curves in results["branches"].values():
        assert set(curves) == {"pass@k", "maj@k"} and sorted(curves["pass@k"]) == [1, 2, 4]
        assert all(0.0 <= v <= 1.0 for c in curves.values() for v in c.values())
    saved = load_results(tmp_path / "run")
    assert saved["experiment"] == preset and saved["task"] == "math"
    assert saved["config"]["model"]["use_chat_template"] and saved["config"]["model"]["name"] == "tiny_mistral"
    # the preset's training hyperparameters survive the shrink
    assert saved["config"]["objective"]["learning_rate"] == compose([f"experiment={preset}"]).objective.learning_rate
    warmups = [p for p in (tmp_path / "cache" / "warmup").iterdir() if p.is_dir()]
    assert len(warmups) == 1 and (warmups[0] / "final" / "adapter_config.json").exists()  # a LoRA adapter
    if extra:
        assert saved["config"]["model"]["load_in_4bit"]
    print(f"{preset}: {elapsed:.1f} s")


@pytest.mark.slow
def test_grid_with_submitit_local_shares_one_warmup_then_report(tmp_path):
    """`-m experiment=math_passn_sft` with hydra/launcher=submitit_local: one job per branch (N = 4, 16,
    64) running in parallel processes, one warmup and one standard branch between them; then the
    report renders the grid beside the paper."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    shrink = [o for o in SHRINK if not o.startswith("hardware.num_threads")]
    args = ["-m", "experiment=math_passn_sft", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15",
            "hardware.num_threads=1", *shrink, *SHRINK_SFT, f"cache_dir={cache}", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run([sys.executable, "-m", "cat_experiments.main", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    records = sorted(sweep.glob("*/results.json"))
    assert len(records) == 3, list(sweep.rglob("*"))[:50]
    jobs = [p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]  # %j: the submission pickles
    assert len(jobs) == 3  # three submitit jobs, one per branch
    warmups = [p for p in (cache / "warmup").iterdir() if p.is_dir()]
    assert len(warmups) == 1
    branches = sorted(p.name.split("-")[0] for p in (cache / "branches").iterdir() if p.is_dir())
    assert branches == ["cat", "cat", "cat", "standard"]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert logs.count("[warmup] CE on") == 1 and logs.count("[warmup] cached") == 2
    assert logs.count("[train:standard] cached") == 2

    # no --paper: the paper's numbers shipped with the package (a clone has no ../shared/reference)
    rep = subprocess.run([sys.executable, "-m", "cat_experiments.report", str(sweep)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = rep.stdout
    assert "## Beside the paper: math_passn_sft" in text
    for row in ("standard", "pass@4", "pass@16", "pass@64"):
        assert f"| {row} | ours |" in text
    assert "|  | paper | 15.8 | 29.6 |" in text  # the paper's standard row (pass@1, pass@4) in percent
    for name in ("report.md", "report.csv", "report.png", "paper.md", "paper.csv", "paper.png"):
        assert (sweep / name).stat().st_size > 0
    assert OmegaConf.load(sweep / "multirun.yaml").hydra.sweeper.params["strategy.n"] == "4,16,64"


@pytest.mark.parametrize("experiment", ["math_passn_rl", "math_majority_rl", "protein_unconditional",
                                        "protein_conditional"])
def test_rl_preset_plans_show_the_authors_conventions(experiment):
    """issue 8: scored at T = 1 though sampled at T, dropout off, weight decay 0.01, token-mean KL."""
    from cat_experiments.plan import format_plan, plan

    cfg = compose([f"experiment={experiment}"])
    t = plan(cfg)["training"]
    assert t["logprob_temperature"] == 1.0 and t["sample_temperature"] != 1.0
    assert t["dropout"] == "off" and t["weight_decay"] == 0.01
    assert "token-mean KL" in t["kl"]
    assert cfg.model.lora is None or cfg.model.lora.dropout == 0.0
    assert t["advantage_clip"] == (5.0 if experiment.startswith("protein") else None)
    if experiment == "math_majority_rl":
        assert t["k"].startswith("dynamic")
    assert "logprob_temperature 1.0" in format_plan(cfg)
