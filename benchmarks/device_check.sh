#!/usr/bin/env bash
# Second, short GPU check (device tool): the CUDA paths the 3-seed demo script did not cover.
#  1. the default pipeline on the GPU (hardware=gpu, bf16), shrunk: CAT Pass@N SFT + eval;
#  2. the MATH Pass@N SFT preset on a tiny Mistral in NF4 4-bit with LoRA on the GPU (hardware=gpu_4bit).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cp -r .whl/site/antlr4 /tmp/site/
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
M=$PWD/.whl/data/math500_test.jsonl
t0=$(date +%s)
python3 -m cat_experiments.main hardware=gpu logger=none cache_dir=/tmp/gcache warmup.max_steps=300 objective.max_steps=200 \
  hydra.run.dir=/tmp/gpu_sft > $OUT/gpu_sft.log 2>&1; echo "gpu_sft rc=$? $(( $(date +%s) - t0 ))s" | tee $OUT/status.txt
t0=$(date +%s)
python3 -m cat_experiments.main experiment=math_passn_sft model=tiny_mistral hardware=gpu_4bit logger=none \
  dataset.path=$M dataset.test_path=$M dataset.grader=paper dataset.n_train=64 dataset.n_test=16 \
  warmup.max_steps=4 objective.max_steps=4 eval.pool_size=8 eval.budgets=[1,2,4,8] eval.max_new_tokens=16 \
  cache_dir=/tmp/gcache4 hydra.run.dir=/tmp/gpu_qlora > $OUT/gpu_qlora.log 2>&1; echo "gpu_qlora rc=$? $(( $(date +%s) - t0 ))s" | tee -a $OUT/status.txt
python3 - <<'PY' >> $OUT/status.txt 2>&1
import glob, json
for f in ["/tmp/gpu_sft/results.json", "/tmp/gpu_qlora/results.json"]:
    try:
        r = json.load(open(f)); print(f, {b: {m: c for m, c in v.items()} for b, v in r["branches"].items()})
    except Exception as e:
        print(f, "missing", e)
PY
grep -h "Linear4bit\|trainable" /tmp/gpu_qlora/main.log | head -3 >> $OUT/status.txt
