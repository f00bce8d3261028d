"""The methods comparison: its report on hand-made records (records/methods.py: efficiency read off
standard's curve, paired gains and their SE, the ">max budget" case, missing seeds), the command, and the
`methods` preset (conf/experiment/methods.yaml, conf/method/*.yaml): it composes, every method validates,
the methods share one warmup and one standard branch per seed, and its dry-run plan lists every method."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose

from cat_experiments.records.methods import (
    STANDARD,
    Reach,
    build_methods_table,
    collect_methods,
    efficiency_text,
    method_of,
    paired,
    render_methods_markdown,
    samples_to_reach,
)
from cat_experiments.records.methods_plot import write_methods_report

BUDGETS = (1, 2, 4, 8, 16, 32, 64)


def curve(values):
    return dict(zip(BUDGETS, values, strict=True))


def record(strategy, seed, cat=None, standard=None, estimator="surrogate", n=8, k=None, maj=None):
    """A results.json as the pipeline writes it (int budgets, as load_results gives them back)."""
    branches = {"warmup": {"pass@k": curve([.1, .15, .2, .3, .4, .5, .6]), "maj@k": curve([.1] * 7)}}
    if standard is not None:
        branches["standard"] = {"pass@k": curve(standard), "maj@k": curve(maj or standard)}
    if cat is not None:
        branches["cat" if strategy != "standard" else "standard"] = {"pass@k": curve(cat), "maj@k": curve(maj or cat)}
    return {"experiment": "methods", "strategy": strategy, "target_n": n if strategy != "standard" else 1,
            "strategy_k": k, "seed": seed, "objective": "rl", "task": "arithmetic", "pool_size": 64,
            "branches": branches,
            "config": {"strategy": {"name": strategy, "n": n, "k": k, "estimator": estimator,
                                    "p_estimator": "sequence"}}}


STD = [.20, .28, .34, .40, .50, .60, .70]


# ---- samples_to_reach / efficiency ------------------------------------------------------------------------

def test_samples_to_reach_interpolates_in_log_k():
    # .45 lies halfway between k=8 (.40) and k=16 (.50): log-linear -> sqrt(8 * 16) = 11.31
    r = samples_to_reach(curve(STD), .45)
    assert r.bound == "exact" and r.k == pytest.approx(math.sqrt(8 * 16))
    # a quarter of the way from k=2 (.28) to k=4 (.34): 2 * 2 ** 0.25
    assert samples_to_reach(curve(STD), .295).k == pytest.approx(2 * 2 ** .25)
    # exactly on a budget: that budget
    assert samples_to_reach(curve(STD), .60) == Reach(32.0, "exact")
    assert efficiency_text(samples_to_reach(curve(STD), .45), 8) == f"{math.sqrt(128) / 8:.2f}x"


def test_samples_to_reach_beyond_the_largest_budget_and_below_the_smallest():
    r = samples_to_reach(curve(STD), .71)
    assert r == Reach(64.0, "beyond")
    assert efficiency_text(r, 8) == ">8.00x"
    low = samples_to_reach(curve(STD), .15)
    assert low == Reach(1.0, "at_most")
    assert efficiency_text(low, 8) == "<=0.12x"


def test_samples_to_reach_takes_the_first_crossing_of_a_non_monotone_curve():
    # maj@k can dip: the first budget that reaches the value counts, interpolated from the one before it
    c = {1: .2, 2: .1, 4: .3, 8: .25}
    assert samples_to_reach(c, .25).k == pytest.approx(math.exp(math.log(2) + .75 * math.log(2)))
    with pytest.raises(ValueError):
        samples_to_reach({}, .1)


# ---- paired gains -------------------------------------------------------------------------------------------

def test_paired_mean_and_standard_error():
    p = paired({0: .5, 1: .7, 2: .4}, {0: .4, 1: .5, 2: .5})
    diffs = [.1, .2, -.1]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert p.mean == pytest.approx(mean) and p.se == pytest.approx(se)
    assert (p.n, p.wins, p.seeds, p.missing) == (3, 2, (0, 1, 2), ())


def test_paired_skips_seeds_one_side_lacks_and_names_them():
    p = paired({0: .5, 1: .7, 3: .9}, {0: .4, 1: .5, 2: .5})
    assert p.seeds == (0, 1) and p.missing == (2, 3)
    assert p.mean == pytest.approx(.15) and p.se == pytest.approx(.05)
    one = paired({0: .5}, {0: .4, 1: .3})
    assert one.n == 1 and one.mean == pytest.approx(.1) and math.isnan(one.se)
    assert paired({}, {0: .1}).n == 0


# ---- records -> table ----------------------------------------------------------------------------------------

def test_method_of_names_each_estimator_and_its_target():
    assert method_of(record("standard", 0, cat=STD)).label == STANDARD
    pk = method_of(record("pass_at_n", 0, cat=STD, standard=STD, estimator="pkpo"))
    assert (pk.label, pk.metric, pk.n) == ("PKPO pass@k (N=8)", "pass@k", 8)
    maj = method_of(record("majority", 0, cat=STD, standard=STD, k=3))
    assert (maj.label, maj.metric) == ("majority CAT (N=8, k=3)", "maj@k")
    assert method_of(record("majority", 0, cat=STD, standard=STD, estimator="loo")).label == "majority LOO (N=8)"
    # best-of-N on a 0/1 reward reports pass@k, no max@k: its target is pass@N
    assert method_of(record("best_of_n", 0, cat=STD, standard=STD)).metric == "pass@k"


def test_table_pairs_each_method_with_its_records_standard():
    up = [.18, .27, .35, .45, .58, .68, .76]  # pass@8 .45: standard needs sqrt(8*16) samples
    recs = [record("standard", s, cat=STD, standard=None) for s in (0, 1, 2)]
    recs += [record("pass_at_n", s, cat=[v + .01 * s for v in up], standard=STD, estimator="pkpo") for s in (0, 1, 2)]
    rows = collect_methods(recs)
    assert [r.key.label for r in rows] == [STANDARD, "PKPO pass@k (N=8)"]
    from cat_experiments.records.methods import MethodsTable

    table = MethodsTable(rows, list(BUDGETS))
    info = table.line(rows[1])
    assert info["gain"].mean == pytest.approx(.06) and info["gain"].se == pytest.approx(.01 / math.sqrt(3))
    assert info["gain"].wins == 3
    assert info["tax"].mean == pytest.approx(-.01)  # pass@1 .18 + .01 s vs .20
    # the mean value .46 read off standard's mean curve: between k=8 (.40) and 16 (.50) at 0.6
    assert info["reach"].k == pytest.approx(math.exp(math.log(8) + .6 * math.log(2)))
    md = render_methods_markdown(table)
    assert "| PKPO pass@k (N=8) | pass@8 | 0.460 | +0.060 ± 0.006 | 3/3 |" in md
    assert f"{info['reach'].k / 8:.2f}x" in md


def test_table_missing_seed_and_max_budget(tmp_path):
    # majority: maj@8 above anything standard's maj@k reaches -> ">max budget"; seed 2 has no method run
    std_maj = [.2, .21, .22, .23, .24, .25, .25]
    recs = [record("majority", s, cat=STD, standard=STD, k=3, maj=None) for s in (0, 1)]
    for rec in recs:
        rec["branches"]["standard"]["maj@k"] = curve(std_maj)
        rec["branches"]["cat"]["maj@k"] = curve([.2, .22, .25, .30, .31, .32, .33])
    recs.append(record("standard", 2, cat=STD))
    for i, rec in enumerate(recs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(rec))
    table = build_methods_table(tmp_path)
    maj = next(r for r in table.rows if r.key.strategy == "majority")
    info = table.line(maj)
    assert info["gain"].seeds == (0, 1) and info["gain"].missing == (2,)
    assert info["gain"].mean == pytest.approx(.30 - .23) and info["gain"].wins == 2
    assert info["reach"] == Reach(64.0, "beyond")
    md = render_methods_markdown(table)
    assert ">64 (max budget) | >8.00x" in md and "(unpaired: 2)" in md
    paths = write_methods_report(table, tmp_path / "out")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert "majority CAT (N=8, k=3)" in paths["csv"].read_text()


def test_report_methods_command(tmp_path):
    recs = [record("standard", s, cat=STD) for s in (0, 1)]
    recs += [record("pass_at_n", s, cat=[.2, .3, .4, .5, .6, .7, .8], standard=STD) for s in (0, 1)]
    for i, rec in enumerate(recs):
        (tmp_path / "sweep" / str(i)).mkdir(parents=True)
        (tmp_path / "sweep" / str(i) / "results.json").write_text(json.dumps(rec))
    out = subprocess.run([sys.executable, "-m", "cat_experiments.report", "methods", str(tmp_path / "sweep"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| CAT Pass@N (N=8) | pass@8 | 0.500 | +0.100 ± 0.000 | 2/2 |" in out.stdout
    assert (tmp_path / "out" / "methods.png").is_file()


# ---- the preset ------------------------------------------------------------------------------------------------

def preset_methods() -> list[str]:
    params = compose(["experiment=methods"], return_hydra_config=True).hydra.sweeper.params
    return [m.strip() for m in str(params["method"]).split(",")]


def test_methods_preset_composes_and_sweeps_every_method_over_three_seeds():
    assert (CONF / "experiment" / "methods.yaml").read_text().splitlines()[0] == "# @package _global_"
    params = compose(["experiment=methods"], return_hydra_config=True).hydra.sweeper.params
    assert len(str(params["seed"]).split(",")) >= 3
    methods = preset_methods()
    files = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    assert sorted(methods) == files
    assert {"standard", "cat_passn", "pkpo", "maxrl", "best_sample", "passk_training", "majority",
            "majority_loo"} <= set(methods)
    alone = compose(["experiment=methods"])  # one job without method=: CAT Pass@8
    assert (alone.strategy.name, alone.strategy.n, alone.strategy.estimator) == ("pass_at_n", 8, "surrogate")
    assert compose(["experiment=methods", "method=majority_loo"]).strategy.estimator == "loo"


def test_methods_share_one_warmup_and_one_standard_branch_per_seed():
    from cat_experiments.cache import branch_key, standard_strategy_cfg, warmup_key

    cfgs = {m: compose(["experiment=methods", f"method={m}"]) for m in preset_methods()}
    for m, cfg in cfgs.items():
        assert cfg.objective.name == "rl" and cfg.dataset.name == "arithmetic", m
        assert list(cfg.dataset.mix) == ["2*2", "3*1"], m  # dataset_objective/arithmetic_rl.yaml composed
        if m != "standard":  # N = 8 from M = 8; Pass@k Training k = 4 (its advantage is 0 at k = M)
            assert cfg.objective.num_generations == 8 and cfg.strategy.n == (4 if m == "passk_training" else 8), m
    assert len({warmup_key(c) for c in cfgs.values()}) == 1
    std = standard_strategy_cfg()
    assert len({branch_key(c, std) for c in cfgs.values()}) == 1
    assert branch_key(cfgs["standard"], cfgs["standard"].strategy) == branch_key(cfgs["standard"], std)
    assert len({branch_key(c, c.strategy) for c in cfgs.values()}) == len(cfgs)  # every method trains its own


def test_methods_preset_dry_run_plans_every_method(tmp_path):
    methods = preset_methods()
    out = subprocess.run(
        [sys.executable, "-m", "cat_experiments.main", "-m", "experiment=methods", "dry_run=true", "seed=0",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", f"cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for m in methods:
        assert f"method={m}" in text, m
    # seed=0 on the command line replaces the preset's seeds: one plan per method
    assert text.count("plan for experiment 'methods'") == len(methods)
    assert "branch standard: rl standard(N=1)" in text
    for estimator in ("pkpo", "maxrl", "best_sample"):
        assert f"rl pass_at_n(N=8, estimator={estimator})" in text, estimator
    assert "rl pass_at_n(N=4, estimator=passk_training)" in text
    assert "rl majority(N=8, k=3" in text and "estimator=loo" in text


def test_standard_line_from_the_methods_records_without_a_standard_run():
    from cat_experiments.records.methods import MethodsTable

    recs = [record("pass_at_n", s, cat=[.2, .3, .4, .5, .6, .7, .8], standard=STD, estimator="maxrl") for s in (0, 1)]
    table = MethodsTable(collect_methods(recs), list(BUDGETS))
    assert table.standard_row() is not None and table.standard_row().mean_curve("method", "pass@k") == curve(STD)
    md = render_methods_markdown(table)
    assert f"| {STANDARD} | pass@k | | | | 0.200 |" in md
    assert "| MaxRL (N=8) | pass@8 | 0.500 | +0.100 ± 0.000 | 2/2 |" in md


def test_gain_curve_is_the_paired_mean_difference_per_budget():
    from cat_experiments.records.methods import gain_curve

    recs = [record("pass_at_n", 0, cat=[v + .02 for v in STD], standard=STD),
            record("pass_at_n", 1, cat=[v - .01 for v in STD], standard=STD),
            record("standard", 1, cat=STD)]
    row = next(r for r in collect_methods(recs) if r.key.strategy == "pass_at_n")
    diff = gain_curve(row, "pass@k")
    assert sorted(diff) == list(BUDGETS) and all(v == pytest.approx(.005) for v in diff.values())
