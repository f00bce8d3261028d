"""The report renders a MATH grid in the paper's table shape, beside reference/paper_results.json."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import SHARED

from cat_experiments import report as report_mod
from cat_experiments.records import write_records

PAPER = SHARED / "reference" / "paper_results.json"
MINI_PAPER = {
    "math_passn_sft": {
        "metric": "pass@k",
        "k": [1, 4, 64],
        "rows": {
            "standard": [15.8, 29.6, 59.8],
            "pass@4": [15.2, 30.5, 63.8],
            "pass@16": [14.5, 30.1, 66.2],
            "pass@64": [13.5, 28.5, 67.6],
        },
    },
    "math_majority_sft": {
        "metric": "maj@k",
        "k": [1, 8],
        "rows": {"standard": [21.9, 23.3], "maj@8,k=3": [22.2, 24.8], "maj@64,k=26": [21.4, 23.7]},
    },
    "math_passn_rl": {
        "metric": "pass@k",
        "k": [1, 32],
        "rows": {"standard": [8.3, 35.8], "pass@4": [8.8, 36.6], "pass@16": [8.3, 40.0]},
    },
    "math_majority_rl": {
        "metric": ["pass@1", "maj@4", "maj@8", "maj@16"],
        "rows": {"standard": [11.1, 14.4, 17.6, 19.2], "maj@4": [10.9, 15.0, 17.9, 23.0]},
    },
}


def curve(base, budgets):
    return {k: round(base + 0.01 * k, 6) for k in budgets}


def record(
    experiment,
    strategy,
    n,
    objective="sft",
    k=None,
    weight_form="log",
    seed=0,
    budgets=(1, 2, 4, 8, 16, 32, 64),
    bump=0.0,
):
    pass_base = (
        {"standard": 0.10, "pass_at_n": 0.12, "majority": 0.11}[strategy]
        + 0.01 * (n // 4)
        + bump
        + 0.05 * seed
    )
    branches = {
        "warmup": {"pass@k": curve(0.05, budgets), "maj@k": curve(0.04, budgets)},
        "cat": {"pass@k": curve(pass_base, budgets), "maj@k": curve(pass_base - 0.02, budgets)},
    }
    if strategy != "standard":
        branches["standard"] = {
            "pass@k": curve(0.10 + 0.05 * seed, budgets),
            "maj@k": curve(0.08 + 0.05 * seed, budgets),
        }
    return {
        "experiment": experiment,
        "strategy": strategy,
        "target_n": n,
        "strategy_k": k,
        "seed": seed,
        "objective": objective,
        "task": "math",
        "pool_size": max(budgets),
        "branches": branches,
        "config": {"strategy": {"name": strategy, "n": n, "k": k, "weight_form": weight_form}},
    }


def grid(root, recs):
    for i, rec in enumerate(recs):
        write_records(root / str(i), rec)
    return root


def test_passn_sft_grid_in_the_papers_shape(tmp_path, capsys):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    root = grid(
        tmp_path / "sweep",
        [record("math_passn_sft", "pass_at_n", n, seed=s) for n in (4, 16, 64) for s in (0, 1)],
    )
    assert report_mod.main([str(root), "--paper", str(paper)]) == 0
    printed = capsys.readouterr().out
    md = (root / "paper.md").read_text()
    assert md.strip() in printed and md.strip() in (root / "report.md").read_text()
    assert "## Beside the paper: math_passn_sft (paper table `math_passn_sft`: pass@k, in %)" in md
    assert "| branch | source | pass@1 | pass@4 | pass@64 |" in md
    # ours in percent (mean ± std over 2 seeds), the paper's row under it
    assert "| standard | ours | 13.5 ± 3.5 | 16.5 ± 3.5 | 76.5 ± 3.5 |" in md
    assert "|  | paper | 15.8 | 29.6 | 59.8 |" in md
    assert "| pass@16 | ours | 19.5 ± 3.5 | 22.5 ± 3.5 | 82.5 ± 3.5 |" in md
    assert "| warmup (CE, stopped) | ours |" in md  # ours only: the paper has no warmup row
    # the caption states our sampling (these records carry only the pool size) and seeds
    assert ("Ours: Sampling: temperature unrecorded, top-p unrecorded, top-k unrecorded, pool size 64, "
            "max new tokens unrecorded, engine unrecorded; N 4, 16, 64; seeds 0, 1 (2).") in md
    lines = md.splitlines()
    order = [ln.split("|")[1].strip() for ln in lines if "| ours |" in ln]
    assert order == ["warmup (CE, stopped)", "standard", "pass@4", "pass@16", "pass@64"]
    with open(root / "paper.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ours = {(r["branch"], int(r["budget"])): r for r in rows if r["source"] == "ours"}
    theirs = {(r["branch"], int(r["budget"])): r for r in rows if r["source"] == "paper"}
    assert float(ours[("pass@64", 64)]["value"]) == pytest.approx(94.5)
    assert ours[("pass@64", 64)]["n_seeds"] == "2"
    assert float(theirs[("pass@64", 64)]["value"]) == 67.6 and len(theirs) == 4 * 3
    png = (root / "paper.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_majority_sft_rows_carry_n_and_k_and_unrun_paper_rows_show(tmp_path):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    recs = [
        record("math_majority_sft", "majority", n, k=k, budgets=(1, 2, 4, 8)) for n, k in ((8, 3), (16, 4))
    ]
    root = grid(tmp_path / "sweep", recs)
    report_mod.main([str(root), "--paper", str(paper)])
    md = (root / "paper.md").read_text()
    assert "maj@k, in %" in md and "| branch | source | maj@1 | maj@8 |" in md
    assert "| maj@8,k=3 | ours |" in md and "| maj@16,k=4 | ours |" in md
    assert "| maj@64,k=26 | paper | 21.4 | 23.7 |" in md  # a paper row we did not run: paper only
    assert "| maj@16,k=4 | paper |" not in md  # no such row in the paper


def test_rl_ablation_gets_its_own_rows(tmp_path):
    """The raw-form ablation of Pass@N RL is kept apart from the main (log) rows, in both reports."""
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    recs = [
        record(
            "math_passn_rl",
            "pass_at_n",
            n,
            objective="rl",
            weight_form=form,
            budgets=(1, 2, 4, 8, 16, 32),
            bump=0.1 if form == "raw" else 0.0,
        )
        for n in (4, 16)
        for form in ("log", "raw")
    ]
    root = grid(tmp_path / "sweep", recs)
    report_mod.main([str(root), "--paper", str(paper)])
    rep = report_mod.build_report(root)
    assert "pass_at_n(N=4) [strategy.weight_form=log]" in rep.labels
    assert "pass_at_n(N=4) [strategy.weight_form=raw]" in rep.labels
    md = (root / "paper.md").read_text()
    assert "| pass@4 | ours | 14.0 | 45.0 |" in md and "| pass@4 (raw) | ours | 24.0 | 55.0 |" in md
    assert md.count("| pass@4 (raw) |") == 1  # the paper's rows are the main (log) form only


def test_majority_rl_mixed_columns(tmp_path):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    recs = [
        record("math_majority_rl", "majority", n, objective="rl", weight_form="raw", budgets=(1, 4, 8, 16))
        for n in (4, 8)
    ]
    root = grid(tmp_path / "sweep", recs)
    report_mod.main([str(root), "--paper", str(paper)])
    md = (root / "paper.md").read_text()
    assert "| branch | source | pass@1 | maj@4 | maj@8 | maj@16 |" in md
    # maj@4 ours: pass@k[1] then maj@k at 4, 8, 16 (maj = pass base - 0.02)
    assert "| maj@4 | ours | 13.0 | 14.0 | 18.0 | 26.0 |" in md
    assert "|  | paper | 10.9 | 15.0 | 17.9 | 23.0 |" in md
    assert "| maj@8 | ours |" in md


def test_shipped_paper_file_and_default_location(tmp_path, monkeypatch):
    # the default is the copy shipped inside the package (a user's clone has no ../shared)
    shipped = report_mod.default_paper_path()
    assert shipped.is_file() and "shared" not in shipped.parts
    if PAPER.exists():  # the shipped copy is the reference file, unchanged
        assert json.loads(shipped.read_text()) == json.loads(PAPER.read_text())
    paper = report_mod.load_paper(shipped)
    assert set(report_mod.PAPER_KEYS.values()) <= set(paper)
    root = grid(tmp_path / "sweep", [record("math_passn_sft", "pass_at_n", 16)])
    report_mod.main([str(root)])  # no --paper: the shipped copy
    md = (root / "paper.md").read_text()
    assert "|  | paper | 14.5 | 30.1 | 40.3 | 50.9 | 59.8 | 66.2 |" in md
    assert "| branch | source | pass@1 | pass@4 | pass@8 | pass@16 | pass@32 | pass@64 |" in md


def test_no_paper_section_for_other_experiments_and_flags(tmp_path, capsys):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    root = grid(tmp_path / "demo", [record("demo", "pass_at_n", 4)])
    report_mod.main([str(root), "--paper", str(paper)])
    assert "Beside the paper" not in capsys.readouterr().out and not (root / "paper.md").exists()
    report_mod.main([str(root), "--paper", str(paper), "--paper-key", "math_passn_sft"])  # forced
    assert "Beside the paper: demo" in (root / "paper.md").read_text()
    root2 = grid(tmp_path / "grid", [record("math_passn_sft", "pass_at_n", 4)])
    report_mod.main([str(root2), "--no-paper"])
    assert not (root2 / "paper.md").exists()
    with pytest.raises(SystemExit, match="not found"):
        report_mod.main([str(root2), "--paper", str(tmp_path / "missing.json")])


def test_report_logs_to_wandb_offline(tmp_path, monkeypatch, capsys):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(MINI_PAPER))
    root = grid(tmp_path / "sweep", [record("math_passn_sft", "pass_at_n", n) for n in (4, 16)])
    assert report_mod.main([str(root), "--paper", str(paper), "--wandb"]) == 0
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert "W&B: logged the report" in capsys.readouterr().err
