"""benchmarks/demo_study.py: the numbers the README's effect tables quote (paired gains, target metric)."""

from __future__ import annotations

import importlib.util
import math

from conftest import ROOT

from cat_experiments.records import write_records

spec = importlib.util.spec_from_file_location("demo_study", ROOT / "benchmarks" / "demo_study.py")
demo_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_study)


def test_paired_mean_and_standard_error():
    mean, se = demo_study.paired([0.045, 0.076, 0.025, 0.015, 0.103])
    assert math.isclose(mean, 0.0528)
    sd = math.sqrt(sum((g - 0.0528) ** 2 for g in [0.045, 0.076, 0.025, 0.015, 0.103]) / 4)
    assert math.isclose(se, sd / math.sqrt(5))
    assert math.isnan(demo_study.paired([0.1])[1])


def _record(strategy, n, branches):
    return {"experiment": "demo", "strategy": strategy, "target_n": n, "seed": 0, "objective": "rl",
            "task": "arithmetic", "pool_size": 8, "branches": branches}


def test_target_metric_per_strategy_and_max_falls_back_to_pass_on_01_rewards():
    curves = {"pass@k": {"8": 0.4}, "maj@k": {"8": 0.2}}
    assert demo_study.target_metric(_record("majority", 8, {"cat": curves})) == ("maj@k", 8)
    assert demo_study.target_metric(_record("pass_at_n", 32, {"cat": curves})) == ("pass@k", 32)
    assert demo_study.target_metric(_record("best_of_n", 8, {"cat": curves})) == ("pass@k", 8)
    with_max = {"cat": {**curves, "max@k": {"8": 3.0}}}
    assert demo_study.target_metric(_record("best_of_n", 8, with_max)) == ("max@k", 8)


def test_summary_pairs_seeds_and_checks_the_warmup_control(tmp_path):
    gains = [0.05, 0.02, -0.01]
    for seed, g in enumerate(gains):
        branches = {"warmup": {"pass@k": {1: 0.01, 8: 0.30}, "maj@k": {1: 0.01, 8: 0.05}},
                    "standard": {"pass@k": {1: 0.06, 8: 0.40}, "maj@k": {1: 0.06, 8: 0.08}},
                    "cat": {"pass@k": {1: 0.04, 8: 0.40 + g}, "maj@k": {1: 0.04, 8: 0.06}}}
        write_records(tmp_path / "default" / f"seed{seed}", {**_record("pass_at_n", 8, branches), "seed": seed})
    text = demo_study.summarise("default", tmp_path, [0, 1, 2])
    mean, se = demo_study.paired(gains)
    assert f"CAT - standard at pass@8: {mean:+.4f} +- {se:.4f}" in text
    assert "wins 2/3" in text and "warmup below both on 3/3" in text and "pass@1 tax -0.0200" in text
    assert "| 2 | 0.300 | 0.400 | 0.390 | -0.010 |" in text
