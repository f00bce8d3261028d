"""The protein study: which settings of the tiny protein presets show the paper's Table 6 on every seed?

Runs the real pipeline (``python -m cat_experiments.main``) once per (setting, seed), JOBS at a time with one
thread each, into ``OUT/<setting>/seed<S>/`` (finished runs are skipped, so an interrupted study resumes).
Every run trains BOTH branches from the same start (the preset's ``baseline: true``): standard RL and
best-of-N CAT (N = 8 unless the setting says otherwise), then evaluates the start (pretrained base model or
CE warmup) and both branches on the same pools. It prints per setting and seed the expected max reward
E[max]@N of each model, the paired gain best-of-N - standard, and the share of invalid samples per branch
(at evaluation and over training, by reason).

    python benchmarks/protein_study.py --list
    python benchmarks/protein_study.py --settings u_default,c_default --seeds 0-2      # choose
    python benchmarks/protein_study.py --settings u_default --seeds 3-4                 # confirm
    python benchmarks/protein_study.py --write-docs                                     # README + docs/proteins.md

``--write-docs`` runs (or reuses) the committed presets, u_default and c_default, on seeds 0-4 and rewrites the
generated blocks of README.md ("Proteins") and docs/proteins.md, with the plots in docs/proteins/.

The goals (issue 21): unconditional, best-of-8 beats standard at N = 8 on every seed and at N = 1 on
average; conditional, with a warmup that leaves headroom (warmup E[max]@32 <= 9.0 of 10), best-of-8 beats
standard at N >= 4 on every seed. docs/notes/protein-study.md reports what was tried and chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_study import paired, run_study  # noqa: E402  (benchmarks/ is not a package)

UNCONDITIONAL = ["experiment=protein_unconditional_tiny"]
CONDITIONAL = ["experiment=protein_conditional_tiny"]

# name -> Hydra overrides. u_* unconditional, c_* conditional; "default" is the preset as committed.
SETTINGS: dict[str, list[str]] = {
    "u_default": UNCONDITIONAL,
    "u_lr1e-4": [*UNCONDITIONAL, "objective.learning_rate=1e-4"],
    "u_lp_sampling": [*UNCONDITIONAL, "objective.logprob_temperature=sampling"],
    "u_t1": [*UNCONDITIONAL, "objective.temperature=1.0", "eval.temperature=1.0"],
    "u_beta1": [*UNCONDITIONAL, "objective.beta=1.0"],
    "c_default": CONDITIONAL,
    "c_lr1e-4": [*CONDITIONAL, "objective.learning_rate=1e-4"],
    "c_lp_sampling": [*CONDITIONAL, "objective.logprob_temperature=sampling"],
}

# Budgets the goals name: unconditional N = 1 and 8; conditional N = 4 and 32 (and the warmup's headroom at 32)
REPORT_BUDGETS = {"protein_unconditional": (1, 8), "protein_conditional": (4, 8, 32)}


def emax(record: dict, branch: str, n: int) -> float:
    return record["branches"].get(branch, {}).get("max@k", {}).get(str(n), float("nan"))


def start_branch(record: dict) -> str:
    """The evaluated start of the branches: "warmup" (CE warmup) or "base" (no warmup)."""
    return "warmup" if "warmup" in record["branches"] else "base"


def invalid_cell(record: dict, branch: str) -> str:
    """'eval% / train%' invalid shares of a branch (train: mean over the run's logs)."""
    ev = record.get("sample_stats", {}).get(branch, {}).get("invalid_share")
    ts = record.get("train_stats", {}).get(branch, {})
    train = [v for k, v in ts.items() if k.startswith("invalid/") and k.endswith("/mean")]
    ev_s = f"{100 * ev:.0f}%" if ev is not None else "-"
    return f"{ev_s} / {100 * sum(train):.0f}%" if train else ev_s


def invalid_reasons(record: dict, branch: str) -> str:
    stats = record.get("sample_stats", {}).get(branch, {})
    parts = [f"{k.removeprefix('invalid_')} {100 * v:.0f}%" for k, v in stats.items()
             if k.startswith("invalid_") and k != "invalid_share" and v > 0]
    return ", ".join(parts) or "none"


def summarise(setting: str, out: Path, seeds: list[int]) -> str:
    rows = [(seed, json.loads(f.read_text()), f.parent) for seed in seeds
            if (f := out / setting / f"seed{seed}" / "results.json").exists()]
    if not rows:
        return f"## {setting}: no finished runs\n"
    task = rows[0][1]["task"]
    budgets = REPORT_BUDGETS.get(task, (1, 8))
    start = start_branch(rows[0][1])
    n_cat = rows[0][1]["target_n"]
    head = " | ".join(f"{start} / std / BoN-{n_cat} @{b}" for b in budgets)
    lines = [f"## {setting}  ({' '.join(SETTINGS[setting])}); E[max]@N per model",
             f"| seed | {head} | " + " | ".join(f"gain @{b}" for b in budgets)
             + f" | {start}@{max(budgets)} | invalid eval / train: std | BoN | BoN invalid reasons (eval) | wall s |",
             "|---|" + "---|" * (2 * len(budgets) + 5)]
    gains: dict[int, list[float]] = {b: [] for b in budgets}
    for seed, rec, run_dir in rows:
        cells, gcells = [], []
        for b in budgets:
            w, s, c = emax(rec, start, b), emax(rec, "standard", b), emax(rec, "cat", b)
            cells.append(f"{w:.2f} / {s:.2f} / {c:.2f}")
            gains[b].append(c - s)
            gcells.append(f"{c - s:+.2f}")
        wall = (run_dir / "wall_s.txt").read_text().strip() if (run_dir / "wall_s.txt").exists() else "-"
        lines.append(f"| {seed} | " + " | ".join(cells) + " | " + " | ".join(gcells)
                     + f" | {emax(rec, start, max(budgets)):.2f} | {invalid_cell(rec, 'standard')} | "
                     f"{invalid_cell(rec, 'cat')} | {invalid_reasons(rec, 'cat')} | {wall} |")
    lines.append("")
    for b in budgets:
        mean, se = paired(gains[b])
        wins = sum(g > 0 for g in gains[b])
        lines.append(f"- BoN-{n_cat} - standard at N = {b}: {mean:+.3f} +- {se:.3f} (SE, {len(gains[b])} seeds), "
                     f"wins {wins}/{len(gains[b])}")
    return "\n".join(lines) + "\n"


DOCS_SETTINGS = {"u_default": "unconditional", "c_default": "conditional"}
BEGIN, END = "<!-- protein-study:{}:begin -->", "<!-- protein-study:{}:end -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the markers of block ``name`` replaced by ``body``."""
    begin, end = BEGIN.format(name), END.format(name)
    if begin not in text or end not in text:
        raise SystemExit(f"markers {begin} ... {end} not found: add them where the block belongs")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body.rstrip("\n") + "\n" + end + rest.split(end, 1)[1]


def mean_se_table(records: list[dict], branches: list[str], labels: dict[str, str]) -> str:
    """E[max]@N of each branch at every budget: mean +- SE over the records (seeds)."""
    budgets = sorted({int(k) for r in records for k in r["branches"]["standard"]["max@k"]})
    lines = ["| model | " + " | ".join(f"N={b}" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
    for br in branches:
        cells = []
        for b in budgets:
            mean, se = paired([emax(r, br, b) for r in records])
            cells.append(f"{mean:.2f} ± {se:.2f}" if se == se else f"{mean:.2f}")
        lines.append(f"| {labels[br]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(out: Path, seeds: list[int], root: Path) -> None:
    """The generated blocks of README.md and docs/proteins.md, and the plots in docs/proteins/."""
    from cat_experiments.records.plots import plot_scaling
    from cat_experiments.records.proteins import plot_h_for_run

    figures = root / "docs" / "proteins"
    figures.mkdir(parents=True, exist_ok=True)
    readme, docs = (root / "README.md").read_text(), (root / "docs" / "proteins.md").read_text()
    for setting, task in DOCS_SETTINGS.items():
        runs = [(seed, out / setting / f"seed{seed}") for seed in seeds]
        records = [json.loads((d / "results.json").read_text()) for _, d in runs if (d / "results.json").exists()]
        if not records:
            raise SystemExit(f"no finished runs of {setting} under {out}")
        start = start_branch(records[0])
        n = records[0]["target_n"]
        labels = {start: "pretrained (no RL)" if start == "base" else "CE warmup (no RL)", "standard": "standard RL",
                  "cat": f"best-of-{n} CAT"}
        branches = [start, "standard", "cat"]
        means = {labels[b]: {"max@k": {int(k): sum(emax(r, b, int(k)) for r in records) / len(records)
                                       for k in records[0]["branches"][b]["max@k"]}} for b in branches}
        errors = {labels[b]: {"max@k": {k: paired([emax(r, b, k) for r in records])[1] for k in means[labels[b]]["max@k"]}}
                  for b in branches}
        plot_scaling(means, figures / f"{task}_scaling.png", title=f"{task}: E[max]@N, mean ± SE over {len(records)} seeds",
                     errors=errors, target_n={labels["cat"]: n}, n_seeds={labels[b]: len(records) for b in branches})
        plot_h_for_run(runs[0][1], figures / f"{task}_h_seed{runs[0][0]}.png")
        table = mean_se_table(records, branches, labels)
        sampling = records[0].get("sampling", {})
        caption = (f"Expected max reward E[max]@N, mean ± SE over seeds {seeds[0]}-{seeds[-1]} "
                   f"(`experiment=protein_{task}_tiny`; sampling T {sampling.get('temperature')}, "
                   f"top-k {sampling.get('top_k')}, pool {sampling.get('pool_size')}).")
        readme = replace_block(readme, task, f"{caption}\n\n{table}\n\n![{task}](docs/proteins/{task}_scaling.png)")
        per_seed = summarise(setting, out, seeds)
        docs = replace_block(docs, task, f"{caption}\n\n{table}\n\n![{task}](proteins/{task}_scaling.png)\n"
                                         f"![{task} h](proteins/{task}_h_seed{runs[0][0]}.png)\n\n"
                                         f"Per seed (generated by `python benchmarks/protein_study.py --write-docs`):\n\n"
                                         f"{per_seed.split(chr(10), 1)[1]}")
    (root / "README.md").write_text(readme)
    (root / "docs" / "proteins.md").write_text(docs)
    print(f"wrote README.md, docs/proteins.md and {figures}/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="u_default,c_default", help="comma-separated names (--list shows them)")
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-2 (choose) or 3-4 (confirm)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--out", default="outputs/protein-study", help="where runs and the shared cache go")
    ap.add_argument("--extra", nargs="*", default=[], help="Hydra overrides added to every run (use another --out)")
    ap.add_argument("--cache", default=None, help="cache dir (default OUT/cache); share one to reuse models and warmups")
    ap.add_argument("--list", action="store_true", help="print the settings and exit")
    ap.add_argument("--report-only", action="store_true", help="only summarise finished runs")
    ap.add_argument("--write-docs", action="store_true",
                    help="run (or reuse) u_default and c_default on --seeds (default 0-4 here) and rewrite the "
                         "README's and docs/proteins.md's generated blocks and plots")
    args = ap.parse_args(argv)
    if args.write_docs:
        args.settings = ",".join(DOCS_SETTINGS)
        if args.seeds == "0-2":
            args.seeds = "0-4"
    if args.list:
        for name, ov in SETTINGS.items():
            print(f"{name:16s} {' '.join(ov)}")
        return 0
    settings, seeds, out = run_study(ap, args, SETTINGS)
    report = "\n".join(summarise(s, out, seeds) for s in settings)
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(report + "\n")
    if args.write_docs:
        write_docs(out, seeds, Path(__file__).resolve().parent.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
