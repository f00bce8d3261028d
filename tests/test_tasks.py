"""Tasks: the arithmetic default, MATH rows from files, and clear errors on bad data."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from conftest import MATH500, TINY, compose

from cat_experiments.main import run
from cat_experiments.tasks import DataError, build_task
from cat_experiments.tasks.arithmetic import ArithmeticTask, boxed_integer
from cat_experiments.tasks.files import read_rows
from cat_experiments.tasks.math import MathTask, extract_answer, is_equivalent


def test_arithmetic_is_deterministic_disjoint_and_scored():
    a, b = ArithmeticTask(n_train=100, n_test=20), ArithmeticTask(n_train=100, n_test=20)
    assert a.train_rows() == b.train_rows() and a.test_rows() == b.test_rows()
    assert not {r["prompt"] for r in a.train_rows()} & {r["prompt"] for r in a.test_rows()}
    assert a.train_rows() != ArithmeticTask(n_train=100, n_test=20, data_seed=9).train_rows()
    row = a.test_rows()[0]
    x, y = row["prompt"].rstrip("=").split("*")
    assert row["answer"] == str(int(x) * int(y)) and row["completion"] == f"\\boxed{{{row['answer']}}}"
    assert a.score(row, row["completion"]).correct
    s = a.score(row, "\\boxed{1}")
    assert not s.correct and s.vote_key == "1" and s.reward == 0.0
    assert a.score(row, "garbage").vote_key is None
    assert a.gold_key(row) == row["answer"]


def test_boxed_integer():
    assert boxed_integer("\\boxed{007}") == "7"
    assert boxed_integer("\\boxed{1}\\boxed{-12}") == "-12"
    assert boxed_integer("\\boxed{1.5}") is None and boxed_integer("12") is None


def test_arithmetic_errors_name_the_key():
    with pytest.raises(ValueError, match="dataset.op='/'"):
        ArithmeticTask(op="/")
    with pytest.raises(ValueError, match="exceeds"):
        ArithmeticTask(digits=1, n_train=90, n_test=20)


def math_cfg(**kw):
    base = dict(name="math", path=None, hub_id=None, hub_configs=None, split="train", test_path=None,
                test_hub_id=None, test_hub_configs=None, test_split="test", n_train=0, n_test=0, train_start=0,
                target="answer", levels=None, subjects=None, grader="paper", prompt_template="Problem:\n{problem}",
                shuffle_seed=None)
    base.update(kw)
    return SimpleNamespace(**base)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_math_task_from_files_filters_and_ranges(tmp_path):
    rows = [{"problem": f"p{i}", "solution": f"so \\boxed{{{i}}}", "level": f"Level {1 + i % 5}",
             "type": "Algebra" if i % 2 else "Geometry"} for i in range(20)]
    f = write_jsonl(tmp_path / "train.jsonl", rows)
    task = MathTask(math_cfg(path=str(f), test_path=str(f), levels=[1, 2, 3], train_start=2, n_train=5, n_test=3))
    train = task.train_rows()
    # filters first (levels 1-3: p0 p1 p2 p5 p6 p7 p10 ...), then the index range [2, 7)
    assert [r["problem"] for r in train] == ["p2", "p5", "p6", "p7", "p10"]
    assert all(r["level"] in (1, 2, 3) for r in train)
    assert train[0]["answer"] == "2" and train[0]["completion"] == "\\boxed{2}"
    assert train[0]["prompt"] == "Problem:\np2"
    assert len(task.test_rows()) == 3
    sol = MathTask(math_cfg(path=str(f), test_path=str(f), target="solution", subjects=["Algebra"]))
    assert all(r["subject"] == "Algebra" for r in sol.train_rows())
    assert sol.train_rows()[0]["completion"] == "so \\boxed{1}"
    row = task.test_rows()[0]
    assert task.score(row, "so the answer is \\boxed{" + row["answer"] + "}").correct
    assert not task.score(row, "\\boxed{999}").correct


def test_math500_loads_and_every_reference_solution_grades_correct():
    task = MathTask(math_cfg(path=str(MATH500), test_path=str(MATH500)))
    rows = task.test_rows()
    assert len(rows) == 500
    assert sum(r["level"] in (1, 2, 3) for r in rows) == 43 + 90 + 105
    for r in rows[:50]:
        assert is_equivalent(extract_answer(r["solution"]), r["answer"], grader="paper")


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(DataError, match="dataset.path=.*nope.jsonl.*file not found"):
        read_rows(tmp_path / "nope.jsonl")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", answer: 2}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSONL line"):
        read_rows(f)


def test_missing_field_names_file_line_and_field(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"problem": "a"}, {"question": "b"}])
    with pytest.raises(DataError, match=r"x.jsonl:2: row has no field 'problem'"):
        read_rows(f, required=("problem",))


@pytest.mark.parametrize("content,needle", [
    (None, "file not found"),
    ('{"problem": "a", "answer": "1"}\n{oops\n', ":2: malformed JSONL line"),
])
def test_pipeline_stops_before_training_on_bad_data(tmp_path, content, needle):
    path = tmp_path / "train.jsonl"
    if content is not None:
        path.write_text(content)
    cfg = compose([*TINY, "dataset=math", f"dataset.path={path}", f"dataset.test_path={path}",
                   f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(DataError, match=needle):
        run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "cache" / "warmup").exists()


@pytest.mark.parametrize("overrides,needle", [
    (["dataset.levels=[7]"], r"dataset.levels=\[7\]: no row of dataset.path=.*rows.jsonl.* matches \(its levels: 1, 2\)"),
    (["dataset.subjects=[Poetry]"], r"dataset.subjects=\['Poetry'\]: no row of dataset.path=.* matches"),
    (["dataset.train_start=50"], r"dataset.train_start=50: the training split has only 4 rows"),
])
def test_empty_split_after_filters_names_the_filter(tmp_path, overrides, needle):
    f = write_jsonl(tmp_path / "rows.jsonl", [{"problem": f"p{i}", "answer": str(i), "level": f"Level {1 + i % 2}",
                                               "type": "Algebra"} for i in range(4)])
    cfg = compose(["dataset=math", f"dataset.path={f}", f"dataset.test_path={f}", *overrides])
    with pytest.raises(DataError, match=needle):
        build_task(cfg.dataset)


@pytest.mark.parametrize("content,needle", [
    ('{"problem": "a", "answer": "1"}', r"expected a JSON list of rows .*got a JSON object with keys \['answer', 'problem'\]"),
    ('{"data": [{"problem": "a"}]}', r"got a JSON object with keys \['data'\]"),
    ("[]", "the file has no rows"),
    ('[{"problem": "a"}, 3]', r"rows.json:2: expected a JSON object, got int"),
])
def test_json_file_without_rows_is_an_error(tmp_path, content, needle):
    f = tmp_path / "rows.json"
    f.write_text(content)
    with pytest.raises(DataError, match=needle):
        read_rows(f, key="dataset.test_path")
    (tmp_path / "ok.json").write_text('{"rows": [{"problem": "a"}]}')  # a {"rows": [...]} wrapper is fine
    assert read_rows(tmp_path / "ok.json") == [{"problem": "a"}]


def test_empty_jsonl_and_empty_splits_stop_before_training(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="dataset.path=.*empty.jsonl.*no rows"):
        read_rows(empty)
    with pytest.raises(DataError, match="the test split is empty.*dataset.n_test"):
        build_task(compose(["dataset.n_test=0"]).dataset)
    cfg = compose([*TINY, "dataset=math", f"dataset.path={MATH500}",
                   f"dataset.test_path={empty}", f"cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(DataError, match="empty.jsonl"):
        run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # nothing built, nothing trained


def test_build_task_dispatch():
    assert isinstance(build_task(compose().dataset), ArithmeticTask)


def test_math_shuffle_seed_mixes_rows_deterministically(tmp_path):
    rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(30)]
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    a = MathTask(math_cfg(path=str(f), test_path=str(f), shuffle_seed=1, n_train=10))
    b = MathTask(math_cfg(path=str(f), test_path=str(f), shuffle_seed=1, n_train=10))
    plain = MathTask(math_cfg(path=str(f), test_path=str(f), n_train=10))
    assert a.train_rows() == b.train_rows()
    assert [r["problem"] for r in plain.train_rows()] == [f"p{i}" for i in range(10)]
    assert [r["problem"] for r in a.train_rows()] != [r["problem"] for r in plain.train_rows()]
    assert [r["problem"] for r in a.test_rows()] == [f"p{i}" for i in range(30)]  # the test set keeps its order


def test_arithmetic_mix_draws_equal_shares_of_each_kind_and_scores_them():
    t = ArithmeticTask(mix=["2*2", "3*1", "2+2"], n_train=301, n_test=60, data_seed=7)
    train, test = t.train_rows(), t.test_rows()
    assert len(train) == 301 and len(test) == 60
    for rows, total in ((train, 301), (test, 60)):
        counts = {k: sum(r["kind"] == k for r in rows) for k in ("2*2", "3*1", "2+2")}
        assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == total
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}  # held-out pairs never trained on
    # kinds are interleaved, so a prefix (eval.num_problems) keeps the mix
    assert len({r["kind"] for r in test[:10]}) == 3
    for r in train + test:
        a, op, b = re.fullmatch(r"(\d+)([*+-])(\d+)=", r["prompt"]).groups()
        da, kop, db = r["kind"][0], r["kind"][1], r["kind"][2]
        assert (len(a), op, len(b)) == (int(da), kop, int(db))
        assert r["answer"] == str(eval(f"{a}{op}{b}")) and r["completion"] == f"\\boxed{{{r['answer']}}}"
        assert t.score(r, r["completion"]).correct and not t.score(r, "\\boxed{-1}").correct
    assert train == ArithmeticTask(mix=["2*2", "3*1", "2+2"], n_train=301, n_test=60, data_seed=7).train_rows()


def test_arithmetic_mix_errors_name_the_entry():
    with pytest.raises(ValueError, match="dataset.mix entry '2x2'"):
        ArithmeticTask(mix=["2*2", "2x2"])
    with pytest.raises(ValueError, match="dataset.mix entry '1\\*1' gets 110"):  # only 100 1-digit pairs
        ArithmeticTask(mix=["2*2", "1*1"], n_train=200, n_test=20)
    with pytest.raises(ValueError, match="listed twice"):
        ArithmeticTask(mix=["2*2", "2*2"])


def test_default_arithmetic_rows_are_unchanged_by_the_mix_option():
    # the single-kind default draws exactly the pairs it drew before `mix` existed (cache keys, old results)
    rows = ArithmeticTask().train_rows()
    assert len(rows) == 6000 and rows[0]["prompt"] == "22*13=" and rows[1]["prompt"] == "90*94="
