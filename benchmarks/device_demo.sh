#!/usr/bin/env bash
# Run on the lent accelerator machine (16 CPU cores + one H200) by the device tool:
#  1. the embedded default's 3-seed study (CPU, 2 threads per seed, seeds in parallel), N = 16 and 32;
#  2. a GPU smoke run of the whole pipeline (hardware=gpu, bf16), SFT and RL;
#  3. the RL step benchmark on the GPU.
# Results land in $OUT. Wheels for what that machine lacks travel in .whl (see the device README).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cp -r .whl/site/antlr4 /tmp/site/
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, trl; print(torch.__version__, transformers.__version__, trl.__version__, torch.cuda.get_device_name())"
mkdir -p $OUT/logs
start=$(date +%s)
for s in 0 1 2; do
  OMP_NUM_THREADS=2 python3 -m cat_experiments.main -m seed=$s strategy.n=16,32 hardware.num_threads=2 logger=none \
    cache_dir=/tmp/cache hydra.sweep.dir=/tmp/demo/seed$s > $OUT/logs/seed$s.log 2>&1 &
done
python3 -m cat_experiments.main strategy=pass_at_n hardware=gpu logger=none cache_dir=/tmp/gcache warmup.max_steps=300 \
  objective.max_steps=200 hydra.run.dir=/tmp/gpu_sft > $OUT/logs/gpu_sft.log 2>&1
python3 -m cat_experiments.main strategy=majority objective=rl strategy.k=null objective.all_wrong_penalty=0.5 hardware=gpu \
  logger=none cache_dir=/tmp/gcache warmup.max_steps=300 objective.max_steps=30 hydra.run.dir=/tmp/gpu_rl > $OUT/logs/gpu_rl.log 2>&1
python3 benchmarks/rl_step.py --device cuda --steps 20 --rounds 2 > $OUT/rl_step_gpu.md 2> $OUT/logs/rl_step_gpu.err
wait
echo "demo wall seconds: $(( $(date +%s) - start ))" | tee $OUT/timing.txt
python3 -m cat_experiments.report /tmp/demo > $OUT/demo_report.md 2> $OUT/logs/report.err
tar czf $OUT/demo_results.tgz -C /tmp demo/seed0 demo/seed1 demo/seed2 gpu_sft/results.json gpu_rl/results.json 2>/dev/null
grep -h "^| \|results in" /tmp/gpu_sft/main.log /tmp/gpu_rl/main.log > $OUT/gpu_smoke.md 2>/dev/null
tail -3 $OUT/logs/*.log
