#!/usr/bin/env bash
# Submit the paper's four MATH grids (method.md section 4, Tables 2-5) to SLURM.
#
# Each grid is ONE Hydra multirun (`-m experiment=<preset>`): the preset's hydra.sweeper.params expand
# to one SLURM job per CAT branch (Pass@4/16/64; majority (8,3)/(16,4)/(64,26); Pass@4/16; Maj4/Maj8),
# submitted as a job array by the submitit launcher (conf/hydra/launcher/slurm.yaml). All jobs of a grid
# share one CE warmup and one standard branch through cache_dir: the first job to get there trains them
# under a file lock while the others wait, then every job trains its own CAT branch and evaluates.
#
# Hydra's submitting process waits for its jobs and then writes the sweep's multirun.yaml, so each grid
# is started in the background with nohup; its log goes to $LOG_DIR/<preset>.log.
#
# Usage (from anywhere; runs from the repository root):
#   launchers/submit_math_grids.sh                           # all four grids
#   launchers/submit_math_grids.sh math_passn_sft math_passn_rl
#   launchers/submit_math_grids.sh math_passn_sft -- seed=1  # extra Hydra overrides after --
#   PARTITION=a100 ACCOUNT=myproj launchers/submit_math_grids.sh
#   ECHO=1 launchers/submit_math_grids.sh                    # print the commands, submit nothing
#   PLAN=1 launchers/submit_math_grids.sh                    # dry_run=true locally: print every job's plan
#
# Settings (environment variables):
#   PYTHON      the interpreter (default .venv/bin/python, else python); submitit runs the jobs with it
#   PARTITION   SLURM partition (default gpu)           ACCOUNT   SLURM account (default: none)
#   QOS         SLURM QoS (default: none)                CPUS      CPUs per job (default 8)
#   MEM_GB      memory per job (default 64)              GPUS      GPUs per job (default 1)
#   CACHE_DIR   warmups, branches and eval caches; must be on a filesystem that every node sees and that
#               supports flock (default outputs/cache)
#   LOG_DIR     where the submitting processes log (default outputs/launch_logs)
#   TIME_<PRESET> minutes per job, e.g. TIME_math_majority_sft=2880 (defaults below)
#   REQUEUE     times a job that hits its time limit is requeued (default 3); it resumes from its last
#               checkpoint (objective.save_steps / warmup.save_steps), and finished stages are cached
# W&B: each job logs to project cat-experiments, group = the preset (logger.mode=auto: online with an
# API key and network, else offline in the job's run dir; sync later with `wandb sync`).
# Then: python -m cat_experiments.report outputs/multirun/<preset>/<date>   (tables beside the paper)
set -euo pipefail

cd "$(dirname "$0")/.."

ALL=(math_passn_sft math_majority_sft math_passn_rl math_majority_rl)
# Minutes per job (warmup + one branch + the evaluation of three checkpoints on one GPU; our estimates
# for an A100/H100 with HF generate, 4-bit). The job that trains the shared warmup and standard branch
# is the longest.
declare -A TIME=(
  [math_passn_sft]=1440       # 2 + 3 + 3 epochs on 5,000 short targets; 3 x 500 x 64 samples of <= 64 tokens
  [math_majority_sft]=2880    # full solutions; 3 x 2,462 x 128 samples of <= 512 tokens (the longest)
  [math_passn_rl]=1440        # 125 RL steps of 16 rollouts x 300 tokens; 3 x 500 x 32 samples
  [math_majority_rl]=1440     # 75 RL steps of 32 rollouts x 512 tokens; 3 x 2,462 x 16 samples
)

grids=()
extra=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--" ]]; then shift; extra=("$@"); break; fi
  grids+=("$1"); shift
done
[[ ${#grids[@]} -eq 0 ]] && grids=("${ALL[@]}")

PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}
LOG_DIR=${LOG_DIR:-outputs/launch_logs}
CACHE_DIR=${CACHE_DIR:-outputs/cache}

for grid in "${grids[@]}"; do
  if [[ ! -f "conf/experiment/${grid}.yaml" ]]; then
    echo "unknown grid '${grid}': choose from ${ALL[*]}" >&2
    exit 2
  fi
  var="TIME_${grid}"
  minutes=${!var:-${TIME[$grid]:-720}}
  if [[ -n "${PLAN:-}" ]]; then
    cmd=("$PYTHON" -m cat_experiments.main -m "experiment=${grid}" dry_run=true "cache_dir=${CACHE_DIR}" "${extra[@]}")
  else
    cmd=("$PYTHON" -m cat_experiments.main -m "experiment=${grid}" hydra/launcher=slurm
         "hydra.launcher.partition=${PARTITION:-gpu}"
         "hydra.launcher.timeout_min=${minutes}"
         "hydra.launcher.gpus_per_node=${GPUS:-1}"
         "hydra.launcher.cpus_per_task=${CPUS:-8}"
         "hydra.launcher.mem_gb=${MEM_GB:-64}"
         "hydra.launcher.max_num_timeout=${REQUEUE:-3}"
         "cache_dir=${CACHE_DIR}")
    [[ -n "${ACCOUNT:-}" ]] && cmd+=("hydra.launcher.account=${ACCOUNT}")
    [[ -n "${QOS:-}" ]] && cmd+=("hydra.launcher.qos=${QOS}")
    cmd+=("${extra[@]}")
  fi
  if [[ -n "${ECHO:-}" ]]; then
    printf '%q ' "${cmd[@]}"; echo
  elif [[ -n "${PLAN:-}" ]]; then
    "${cmd[@]}"
  else
    mkdir -p "$LOG_DIR"
    nohup "${cmd[@]}" >"${LOG_DIR}/${grid}.log" 2>&1 &
    echo "${grid}: submitting (pid $!), log ${LOG_DIR}/${grid}.log"
  fi
done
