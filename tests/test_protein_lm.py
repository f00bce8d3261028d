"""The tiny protein LM (corpus, pretraining cache, h plots) and the tiny protein experiments end to end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose

from cat_experiments.models.protein import (
    STATS_FILE,
    corpus_batch,
    family_sequence,
    pretrain_settings,
    sample_stats,
    soluble_sequence,
)
from cat_experiments.records.plots import plot_h_distributions
from cat_experiments.tasks.protein import hydrophobic_fraction

SHRINK_MODEL = ["model.n_embd=32", "model.n_head=2", "model.n_layer=1", "model.pretrain.steps_start=20",
                "model.pretrain.steps=10", "model.pretrain.batch_size=16", "model.pretrain.check_samples=16",
                "logger=none"]


def test_corpus_mixture():
    rng = random.Random(0)
    s = pretrain_settings(compose(["model=tiny_protein"]).model)
    fam = [family_sequence(rng, *s["family_len"], family_h=s["family_h"]) for _ in range(400)]
    sol = [soluble_sequence(rng, *s["soluble_len"]) for _ in range(400)]
    assert all(f[0] == "W" and 20 <= len(f) <= 40 for f in fam)
    assert all(x[0] != "W" and 30 <= len(x) <= 60 for x in sol)
    assert abs(sum(hydrophobic_fraction(f[1:]) for f in fam) / 400 - 0.8) < 0.02
    assert abs(sum(hydrophobic_fraction(x) for x in sol) / 400 - 0.41) < 0.02
    assert sum(hydrophobic_fraction(x) >= 0.65 for x in sol) / 400 < 0.01  # the rare mode is the family
    batch = corpus_batch(rng, 4000, 0.05, s)
    assert 0.04 < sum(b[0] == "W" for b in batch) / 4000 < 0.06


def test_sample_stats_and_plot(tmp_path):
    seqs = ["L" * 15 + "D" * 5, "L" * 7 + "D" * 13, "WLLLLLLLLL", "bad", "LLL"]
    st = sample_stats(seqs)
    assert st["n"] == 5 and st["valid_share"] == 0.6 and st["share_h_ge_0.65"] == 0.4
    assert st["marker_first_share"] == 0.2
    png = plot_h_distributions({"a": seqs, "b": seqs[:2]}, tmp_path / "h.png")
    assert png.stat().st_size > 0
    png = plot_h_distributions({"a": ["LLLLLDDDDD"]}, tmp_path / "c.png", "conditional", {"a": ["DDDDDDDDDD"]})
    assert png.stat().st_size > 0


def test_pretraining_settings_reach_the_cache_key():
    cfg = compose(["model=tiny_protein"])
    s = pretrain_settings(cfg.model)
    assert s["family_share"] == 0.01 and s["family_marker"] == "W" and s["family_len"] == [20, 40]
    assert pretrain_settings(compose(["model=tiny_protein", "model.pretrain.family_h=0.75"]).model)["family_h"] == 0.75


@pytest.mark.slow
def test_tiny_unconditional_runs_end_to_end_and_plots(tmp_path):
    from cat_experiments.main import run
    from cat_experiments.models import resolve_model_path
    from cat_experiments.records.proteins import plot_h_for_run

    cfg = compose(["experiment=protein_unconditional_tiny", *SHRINK_MODEL, f"cache_dir={tmp_path / 'cache'}",
                   "dataset.n_train=16", "objective.max_steps=2", "objective.per_device_train_batch_size=16",
                   "objective.num_generations=8", "objective.max_completion_length=16", "objective.save_steps=1",
                   "objective.logging_steps=1", "eval.pool_size=16", "eval.budgets=[1,2,4,8,16]",
                   "eval.max_new_tokens=16"])
    results = run(cfg, run_dir=tmp_path / "run")
    assert set(results["branches"]) == {"base", "standard", "cat"}
    for curves in results["branches"].values():
        assert set(curves) == {"max@k"}
        c = curves["max@k"]
        assert sorted(c) == [1, 2, 4, 8, 16]
        assert all(-5.0 <= v <= 12.17 for v in c.values())
        assert all(c[a] <= c[b] + 1e-9 for a, b in [(1, 2), (2, 4), (4, 8), (8, 16)])
    stats = json.loads((Path(resolve_model_path(cfg.model, tmp_path / "cache")) / STATS_FILE).read_text())
    assert 0.0 <= stats["T=1.2"]["share_h_ge_0.65"] <= 1.0 and stats["settings"]["steps"] == 10
    # the evaluation stage computed the h statistics of every pool, the base model's too (no warmup)
    assert set(results["sample_stats"]) == {"base", "standard", "cat"}
    assert results["sample_stats"]["cat"]["n"] == 16 and 0 <= results["sample_stats"]["cat"]["valid_share"] <= 1
    # why samples are invalid, per branch: at evaluation (sample_stats) and over training (train_stats)
    for branch in ("standard", "cat"):
        ev = results["sample_stats"][branch]
        assert ev["invalid_share"] == pytest.approx(1 - ev["valid_share"])
        assert ev["invalid_share"] == pytest.approx(ev["invalid_empty"] + ev["invalid_non_amino_acid"]
                                                    + ev["invalid_too_short"])
        tr = results["train_stats"][branch]
        assert {f"invalid/{r}/mean" for r in ("empty", "non_amino_acid", "too_short")} <= set(tr)
    png, h = plot_h_for_run(tmp_path / "run")  # reads files only: results.json and the stores
    assert png.exists() and set(h) == {"base", "standard", "cat"}
    assert h["cat"]["mean_h"] == pytest.approx(results["sample_stats"]["cat"]["mean_h"])
    # the same through the report's command line (issue 9: plot-h is a subcommand of the report)
    from cat_experiments import report

    assert report.main(["plot-h", str(tmp_path / "run"), "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").exists() and (tmp_path / "cli_stats.json").exists()


@pytest.mark.slow
def test_tiny_conditional_runs_end_to_end_and_plots(tmp_path):
    from cat_experiments.main import run
    from cat_experiments.records.proteins import plot_h_for_run

    cfg = compose(["experiment=protein_conditional_tiny", *SHRINK_MODEL, f"cache_dir={tmp_path / 'cache'}",
                   "dataset.n_train=64", "dataset.n_test=4", "warmup.max_steps=3", "warmup.num_examples=32",
                   "warmup.per_device_train_batch_size=16", "objective.data_start=32", "objective.max_steps=2",
                   "objective.per_device_train_batch_size=8", "objective.num_generations=4",
                   "objective.max_completion_length=12", "objective.save_steps=1", "eval.pool_size=4",
                   "eval.budgets=[1,2,4]", "eval.max_new_tokens=12"])
    results = run(cfg, run_dir=tmp_path / "run")
    assert set(results["branches"]) == {"warmup", "standard", "cat"}
    for curves in results["branches"].values():
        assert set(curves) == {"max@k"} and sorted(curves["max@k"]) == [1, 2, 4]
        assert all(-5.0 <= v <= 10.0 for v in curves["max@k"].values())
    png, h = plot_h_for_run(tmp_path / "run")
    assert png.exists() and set(h) == {"warmup", "standard", "cat"}
    assert h["cat"]["n"] == 16 and 0 <= h["cat"]["valid_share"] <= 1  # 4 problems x 4 samples


@pytest.mark.slow
def test_paper_grid_prints_three_plans_in_dry_mode(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cat_experiments.main", "-m", "experiment=protein_unconditional",
                          "dry_run=true", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    for n in (2, 4, 8):
        assert f"branch cat: rl best_of_n(N={n})" in out.stdout
    assert out.stdout.count("branch standard: rl standard(N=1)") == 3
