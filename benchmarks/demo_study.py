"""The demo-effect study: which embedded setting makes CAT beat standard training at its target N on every seed?

Runs the real pipeline (``python -m cat_experiments.main``) once per (setting, seed), JOBS at a time with
one thread each, into ``OUT/<setting>/seed<S>/`` (a finished run is skipped, so an interrupted study resumes),
then prints per setting: the target metric (pass@N, maj@N or max@N) of the warmup control, standard and CAT
on every seed, the mean paired gain CAT - standard with its standard error, the pass@1 tax, the standard
branch's pass@1 against the warmup's, the training reward of RL branches, and the wall time of a run.

    python benchmarks/demo_study.py                                  # the default setting, seeds 0-4
    python benchmarks/demo_study.py --settings sft_n32,sft_n16 --seeds 0-2 --jobs 2
    python benchmarks/demo_study.py --list                           # the settings this study knows
    python benchmarks/demo_study.py --settings default --extra objective.max_steps=600 --out outputs/study-600
    python benchmarks/demo_study.py --settings rl_majority --seeds 0-2 --train-reward   # + pass@1 on train prompts

docs/notes/demo-study.md reports what was tried and what was chosen. Runs share the warmup cache
(OUT/cache), so settings that differ only after the warmup train it once per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> Hydra overrides on top of the embedded default (conf/config.yaml). "default" is the default itself.
SETTINGS: dict[str, list[str]] = {
    "default": [],
    # the README's default before this study: CE warmup 1500 steps, 1500 branch steps, Pass@32 SFT
    "sft_n32_1500": ["warmup.max_steps=1500", "objective.max_steps=1500", "strategy.n=32"],
    "sft_n32": ["strategy=pass_at_n", "strategy.n=32"],
    "sft_n16": ["strategy=pass_at_n", "strategy.n=16"],
    "sft_n64": ["strategy=pass_at_n", "strategy.n=64", "eval.pool_size=128", "eval.budgets=[1,2,4,8,16,32,64,128]"],
    "mix_mul31_n32": ["dataset.mix=[2*2,3*1]", "warmup.max_steps=1000", "objective.max_steps=1000", "strategy.n=32"],
    "mix_add22_n32": ["dataset.mix=[2*2,2+2]", "warmup.max_steps=1000", "objective.max_steps=1000", "strategy.n=32"],
    "mul_small_b1500": ["dataset.n_train=2000", "warmup.max_steps=1000", "objective.max_steps=1500", "strategy.n=32"],
    "mix_mul31_n64": ["dataset.mix=[2*2,3*1]", "warmup.max_steps=1000", "objective.max_steps=1000", "strategy.n=64",
                      "eval.pool_size=128", "eval.budgets=[1,2,4,8,16,32,64,128]"],
    "mix_mul31_b2000": ["dataset.mix=[2*2,3*1]", "warmup.max_steps=1000", "objective.max_steps=2000", "strategy.n=32"],
    "mul_b2000": ["warmup.max_steps=1000", "objective.max_steps=2000", "strategy.n=32"],
    "small3000": ["dataset.n_train=3000", "warmup.max_steps=800", "objective.max_steps=1200", "strategy.n=32"],
    "small2000": ["dataset.n_train=2000", "warmup.max_steps=600", "objective.max_steps=1000", "strategy.n=32"],
    "small2000_n64": ["dataset.n_train=2000", "warmup.max_steps=600", "objective.max_steps=1000", "strategy.n=64",
                      "eval.pool_size=128", "eval.budgets=[1,2,4,8,16,32,64,128]"],
    "w1000_n32": ["warmup.max_steps=1000", "objective.max_steps=1000", "strategy.n=32"],
    "w1000_n64": ["warmup.max_steps=1000", "objective.max_steps=1000", "strategy.n=64", "eval.pool_size=128",
                  "eval.budgets=[1,2,4,8,16,32,64,128]"],
    # RL from the default's warmup (the same cache entry): the commands of the README
    "rl_standard": ["strategy=standard", "objective=rl"],
    "rl_majority": ["strategy=majority", "objective=rl"],  # k = 3 of 8, all-wrong penalty 0.5
    "rl_majority_dynamic": ["strategy=majority", "objective=rl", "strategy.k=null"],  # the paper's dynamic k
    "rl_majority_loo": ["strategy=majority", "objective=rl", "strategy.estimator=loo", "objective.all_wrong_penalty=0"],
    "rl_best_of_n": ["strategy=best_of_n", "objective=rl"],
    "rl_pass_at_n": ["strategy=pass_at_n", "objective=rl"],
}


def target_metric(record: dict) -> tuple[str, int]:
    """The metric CAT aims at: pass@N for pass_at_n, maj@N for majority, expected max@N for best_of_n
    (on a 0/1 reward such as arithmetic's, max@N is pass@N, which the task reports instead)."""
    metric = {"pass_at_n": "pass@k", "majority": "maj@k", "best_of_n": "max@k"}.get(record["strategy"], "pass@k")
    if metric not in record["branches"].get("cat", {}):
        metric = "pass@k"
    return metric, int(record["target_n"])


def run_one(setting: str, seed: int, out: Path, extra: list[str], python: str,
            cache: Path | None = None, settings: dict[str, list[str]] | None = None) -> tuple[Path, float | None]:
    """One pipeline run of a setting (its overrides from ``settings``, default this study's) into
    OUT/<setting>/seed<S>/, one thread; skipped when its results.json exists. Returns (run dir, wall s)."""
    run_dir = out / setting / f"seed{seed}"
    if (run_dir / "results.json").exists():
        return run_dir, None
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "cat_experiments.main", "logger=none", f"seed={seed}", f"cache_dir={cache or out / 'cache'}",
           f"hydra.run.dir={run_dir}", *(settings or SETTINGS)[setting], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.time()
    with open(run_dir / "study.log", "w") as logf:
        rc = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    if rc != 0:
        print(f"FAILED {setting} seed {seed} (rc {rc}); see {run_dir / 'study.log'}", file=sys.stderr)
        return run_dir, None
    (run_dir / "wall_s.txt").write_text(f"{wall:.1f}\n")
    print(f"done {setting} seed {seed} in {wall:.0f} s", flush=True)
    return run_dir, wall


def train_pass1(run_dir: Path, n_problems: int = 400, samples: int = 32) -> dict[str, float]:
    """pass@1 of the warmup and of every branch on the first n_problems TRAINING prompts (samples each,
    the eval settings otherwise): the training reward measured on the same prompts for every model, which the
    logged reward (fresh prompts every step, in the seed's order) is not. Cached in run_dir."""
    out = run_dir / "train_pass1.json"
    if out.exists():
        return json.loads(out.read_text())
    from omegaconf import OmegaConf

    from cat_experiments.pipeline import Pipeline

    cfg = OmegaConf.create(json.loads((run_dir / "results.json").read_text())["config"])
    cfg.eval.update(num_problems=n_problems, pool_size=samples, budgets=[1], engine="hf")
    pipe = Pipeline(cfg)
    # finished runs: cached checkpoints, nothing is trained; pools on the training prompts are stored too
    scores = {name: pipe.evaluate(name, path, split="train")["curves"]["pass@k"][1]
              for name, path in pipe.finished_checkpoints().items()}
    out.write_text(json.dumps(scores))
    return scores


def paired(gains: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)) of paired gains."""
    n = len(gains)
    mean = sum(gains) / n
    if n < 2:
        return mean, float("nan")
    var = sum((g - mean) ** 2 for g in gains) / (n - 1)
    return mean, math.sqrt(var / n)


def _value(record: dict, branch: str, metric: str, k: int) -> float:
    return record["branches"].get(branch, {}).get(metric, {}).get(str(k), float("nan"))


def summarise(setting: str, out: Path, seeds: list[int]) -> str:
    rows, lines = [], []
    for seed in seeds:
        f = out / setting / f"seed{seed}" / "results.json"
        if f.exists():
            rows.append((seed, json.loads(f.read_text()), f.parent))
    if not rows:
        return f"## {setting}: no finished runs\n"
    metric, n = target_metric(rows[0][1])
    name = metric.replace("@k", f"@{n}")
    lines.append(f"## {setting}  ({' '.join(SETTINGS[setting]) or 'the default'}); target {name}")
    lines.append(f"| seed | warmup {name} | standard {name} | CAT {name} | gain | pass@1 w / s / CAT | "
                 "reward s first->last | reward CAT first->last | train pass@1 w / s / CAT | wall s |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    gains, taxes, warm_below, std_above_warm = [], [], 0, 0
    for seed, rec, run_dir in rows:
        w, s, c = (_value(rec, br, metric, n) for br in ("warmup", "standard", "cat"))
        p1 = [_value(rec, br, "pass@k", 1) for br in ("warmup", "standard", "cat")]
        gains.append(c - s)
        taxes.append(p1[2] - p1[1])
        warm_below += int(w < min(s, c))
        std_above_warm += int(p1[1] > p1[0])
        ts = rec.get("train_stats", {})
        rew = [f"{ts.get(br, {}).get('reward/first', float('nan')):.3f}->{ts.get(br, {}).get('reward/last', float('nan')):.3f}"
               if "reward/first" in ts.get(br, {}) else "-" for br in ("standard", "cat")]
        wall = (run_dir / "wall_s.txt").read_text().strip() if (run_dir / "wall_s.txt").exists() else "-"
        tp = json.loads((run_dir / "train_pass1.json").read_text()) if (run_dir / "train_pass1.json").exists() else {}
        train = " / ".join(f"{tp[b]:.3f}" if b in tp else "-" for b in ("warmup", "standard", "cat"))
        lines.append(f"| {seed} | {w:.3f} | {s:.3f} | {c:.3f} | {c - s:+.3f} | "
                     f"{p1[0]:.3f} / {p1[1]:.3f} / {p1[2]:.3f} | {rew[0]} | {rew[1]} | {train} | {wall} |")
    mean, se = paired(gains)
    tax, tax_se = paired(taxes)
    wins = sum(g > 0 for g in gains)
    lines.append(f"\nCAT - standard at {name}: {mean:+.4f} +- {se:.4f} (SE, {len(gains)} seeds; "
                 f"{mean / se if se > 0 else float('nan'):.1f} SE), wins {wins}/{len(gains)}; "
                 f"pass@1 tax {tax:+.4f} +- {tax_se:.4f}; warmup below both on {warm_below}/{len(rows)}; "
                 f"standard pass@1 above warmup on {std_above_warm}/{len(rows)}\n")
    return "\n".join(lines)


def run_study(ap: argparse.ArgumentParser, args: argparse.Namespace,
              table: dict[str, list[str]]) -> tuple[list[str], list[int], Path]:
    """The settings (checked against ``table``), seeds and out dir of a study's command line; unless
    --report-only, runs every (setting, seed) not yet finished, --jobs at a time."""
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in table]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; known: {sorted(table)}")
    seeds, out = parse_seeds(args.seeds), Path(args.out)
    if not args.report_only:
        # setting-major: parallel runs train different seeds' warmups instead of waiting on one warmup's lock
        jobs = [(s, seed) for s in settings for seed in seeds]
        cache = Path(args.cache) if args.cache else None
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda j: run_one(j[0], j[1], out, args.extra, sys.executable, cache, settings=table), jobs))
    return settings, seeds, out


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="default", help="comma-separated names (--list shows them)")
    ap.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,5")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--out", default="outputs/study", help="where runs and the shared cache go")
    ap.add_argument("--extra", nargs="*", default=[], help="Hydra overrides added to every run (use another --out)")
    ap.add_argument("--cache", default=None, help="cache dir (default OUT/cache); share one to reuse warmups")
    ap.add_argument("--list", action="store_true", help="print the settings and exit")
    ap.add_argument("--report-only", action="store_true", help="only summarise finished runs")
    ap.add_argument("--train-reward", action="store_true",
                    help="also measure pass@1 on 400 training prompts for every model of every finished run")
    args = ap.parse_args(argv)
    if args.list:
        for name, ov in SETTINGS.items():
            print(f"{name:16s} {' '.join(ov) or '(the default)'}")
        return 0
    settings, seeds, out = run_study(ap, args, SETTINGS)
    if args.train_reward:
        for s in settings:
            for seed in seeds:
                if (out / s / f"seed{seed}" / "results.json").exists():
                    train_pass1(out / s / f"seed{seed}")
    report = "\n".join(summarise(s, out, seeds) for s in settings)
    print(report)
    (out / "summary.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
