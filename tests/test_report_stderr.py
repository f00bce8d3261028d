"""The report shows a standard error over problems beside every number of a single-seed row (issue 20)."""

from __future__ import annotations

from cat_experiments.records import write_records
from cat_experiments.records.grid import build_report, render_markdown


def _record(seed: int, value: float, se: float | None) -> dict:
    rec = {"experiment": "demo", "strategy": "pass_at_n", "target_n": 4, "seed": seed, "objective": "sft",
           "task": "arithmetic", "pool_size": 8,
           "branches": {"standard": {"pass@k": {1: value, 4: value + 0.1}}, "cat": {"pass@k": {1: value, 4: value + 0.2}}}}
    if se is not None:
        rec["stderr"] = {b: {"pass@k": {"1": se, "4": se / 2}} for b in ("standard", "cat")}
    return rec


def test_one_seed_rows_show_their_standard_error(tmp_path):
    write_records(tmp_path / "0", _record(0, 0.3, 0.0125))
    md = render_markdown(build_report(tmp_path))
    assert "0.300 (±0.013 SE)" in md and "0.500 (±0.006 SE)" in md


def test_rows_over_seeds_show_the_spread_over_seeds_not_a_problem_se(tmp_path):
    write_records(tmp_path / "0", _record(0, 0.3, 0.0125))
    write_records(tmp_path / "1", _record(1, 0.5, 0.0125))
    md = render_markdown(build_report(tmp_path))
    assert "SE)" not in md and "0.400 ± 0.141" in md


def test_records_without_standard_errors_print_the_mean(tmp_path):
    write_records(tmp_path / "0", _record(0, 0.3, None))
    md = render_markdown(build_report(tmp_path))
    assert "| 0.300 |" in md and "SE)" not in md


def test_a_runs_summary_states_its_sampling(tmp_path):
    from cat_experiments.records import summary_table

    rec = _record(3, 0.3, None)
    rec["sampling"] = {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "pool_size": 8, "max_new_tokens": 14,
                       "engine": "hf", "seed": 3, "num_problems": 10}
    assert "Sampling: temperature 0.8, top-p 0.95, top-k 0, pool size 8" in summary_table(rec)
    assert summary_table(rec).endswith("N 4; seed 3.")
