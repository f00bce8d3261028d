"""benchmarks/protein_study.py: the numbers docs/notes/protein-study.md and the README's protein section quote."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("protein_study", ROOT / "benchmarks" / "protein_study.py")
protein_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protein_study)


def _record(seed, start, std, cat, task="protein_unconditional", invalid=0.1):
    curves = lambda v: {"max@k": {"1": v[0], "8": v[1]}}  # noqa: E731
    return {"task": task, "target_n": 8, "seed": seed, "branches": {"base": curves(start), "standard": curves(std),
                                                                      "cat": curves(cat)},
            "sample_stats": {"cat": {"invalid_share": invalid, "invalid_non_amino_acid": invalid, "invalid_empty": 0.0},
                             "standard": {"invalid_share": 0.02}},
            "train_stats": {"cat": {"invalid/empty/mean": 0.01, "invalid/too_short/mean": 0.04}}}


def test_summary_pairs_branches_by_seed_and_counts_wins(tmp_path):
    for seed, (std, cat) in enumerate([((5.0, 10.0), (5.5, 11.0)), ((6.0, 11.0), (5.0, 11.5)), ((4.0, 9.0), (4.5, 8.0))]):
        d = tmp_path / "u_default" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_record(seed, (3.0, 4.5), std, cat)))
    text = protein_study.summarise("u_default", tmp_path, [0, 1, 2])
    # gains at N = 1: +.5, -1, +.5 (mean 0, wins 2/3); at N = 8: +1, +.5, -1 (mean .167, wins 2/3)
    assert "at N = 1: +0.000" in text and "wins 2/3" in text
    mean, se = protein_study.paired([1.0, 0.5, -1.0])
    assert f"at N = 8: {mean:+.3f} +- {se:.3f}" in text
    assert "| 10% / 5% |" in text  # BoN invalid: 10% at evaluation, 1% + 4% over training
    assert "non_amino_acid 10%" in text
    assert protein_study.summarise("u_default", tmp_path, [7]).endswith("no finished runs\n")


def test_mean_se_table_and_generated_blocks():
    recs = [_record(0, (3.0, 4.0), (5.0, 10.0), (6.0, 11.0)), _record(1, (3.0, 4.0), (7.0, 12.0), (6.0, 11.0))]
    table = protein_study.mean_se_table(recs, ["base", "standard", "cat"],
                                        {"base": "pretrained", "standard": "standard RL", "cat": "best-of-8 CAT"})
    assert "| standard RL | 6.00 ± 1.00 | 11.00 ± 1.00 |" in table and "| best-of-8 CAT | 6.00 ± 0.00 |" in table
    text = "a\n<!-- protein-study:x:begin -->\nold\n<!-- protein-study:x:end -->\nb\n"
    assert protein_study.replace_block(text, "x", "new") == \
        "a\n<!-- protein-study:x:begin -->\nnew\n<!-- protein-study:x:end -->\nb\n"
    with pytest.raises(SystemExit, match="protein-study:y:begin"):
        protein_study.replace_block(text, "y", "new")


def test_every_setting_composes():
    from conftest import compose

    from cat_experiments.config import validate

    for name, overrides in protein_study.SETTINGS.items():
        validate(compose(list(overrides)))
        assert name.startswith(("u_", "c_"))
