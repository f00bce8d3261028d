"""Tests for cat_experiments.tasks.math_grading (answer extraction, graders, vote keys)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cat_experiments.tasks import math_grading as mg
from cat_experiments.tasks.math_grading import (
    extract_answer,
    grade,
    is_equivalent,
    last_boxed,
    normalize_answer,
    paper_equivalent,
    vote_key,
)

MATH500 = Path(__file__).resolve().parent / "fixtures" / "math500_test.jsonl"  # fixtures/README.md

# MATH-500 rows whose reference solution is NOT graded correct against its `answer`, with the
# reason. Both are empty: every row's extracted answer matches its `answer` under both graders.
EXPECTED_PAPER_MISSES: dict[int, str] = {}
EXPECTED_MATH_VERIFY_MISSES: dict[int, str] = {}

GRADERS = ["paper", "math_verify"]


@pytest.fixture(scope="module")
def math500() -> list[dict]:
    with MATH500.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert len(rows) == 500
    return rows


# --------------------------------------------------------------------------------------------------
# MATH-500 reference solutions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grader", GRADERS)
def test_math500_reference_solutions_are_correct(math500, grader):
    expected = EXPECTED_PAPER_MISSES if grader == "paper" else EXPECTED_MATH_VERIFY_MISSES
    misses = {}
    for i, row in enumerate(math500):
        pred = extract_answer(row["solution"])
        if not is_equivalent(pred, row["answer"], grader=grader):
            misses[i] = (pred, row["answer"])
    assert set(misses) == set(expected), f"{grader} misses (index: (extracted, answer)): {misses}"


def test_math500_math_verify_itself_accepts_every_answer(math500):
    # The math_verify grader accepts identical normalised strings without calling math-verify;
    # check that math-verify itself also parses and accepts every reference answer (private hook).
    bad = {}
    for i, row in enumerate(math500):
        answer = row["answer"].strip()
        verdict = mg._math_verify_verdict(answer, answer, 5.0)
        if verdict is not True:
            bad[i] = (answer, verdict)
    assert bad == {}, f"math-verify rejects or cannot parse (index: (answer, verdict)): {bad}"


def test_math500_vote_keys_are_strings(math500):
    keys = [vote_key(row["answer"]) for row in math500]
    assert all(isinstance(k, str) and k for k in keys)
    assert keys == [vote_key(row["answer"]) for row in math500]  # deterministic (cached or not)


def test_math500_grade_boxed_completion(math500):
    row = math500[0]
    text = f"Some reasoning... so the answer is $\\boxed{{{row['answer']}}}$."
    for grader in GRADERS:
        correct, key = grade(text, row["answer"], grader=grader)
        assert correct is True
        assert key == vote_key(row["answer"], grader=grader)


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\left\\{ \\frac{a}{b}, {c} \\right\\}}", "\\left\\{ \\frac{a}{b}, {c} \\right\\}"),
        ("first \\boxed{1} then \\boxed{2} finally \\boxed{3}", "3"),
        ("\\fbox{7}", "7"),
        ("\\boxed{1} and \\fbox{8}", "8"),
        ("\\fbox{1} and \\boxed{9}", "9"),
        ("The answer is \\boxed 5.", "5"),
        ("The answer is $\\boxed 12$", "12"),
        ("\\boxed {4}", "4"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("no box here 42", None),
        ("", None),
        (None, None),
        ("\\boxed{1} then truncated \\boxed{\\frac{1}{", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We get $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{ 3 } then \\boxed{ 17 }", "17"),
        ("\\fbox{x+1}", "x+1"),
        ("There are 3 apples and 5 pears, so 8 fruits.", "8"),
        ("The value is -3.5.", "-3.5"),
        ("It is 3/4 of the total", "3/4"),
        ("The total is 1,000 dollars.", "1,000"),
        ("pick 1,2, or 3", "3"),
        ("Total: 12,345.67", "12,345.67"),
        ("no numbers at all", None),
        ("", None),
        (None, None),
        ("\\boxed{}", None),
        ("we had 12 and then \\boxed{\\frac{1}{", "1"),
        # TeX numbers are read whole by the last-number fallback (issue 8): never a denominator or a
        # thousands group alone
        ("so x = \\frac{4}{9}.", "\\frac{4}{9}"),
        ("so $x = -\\dfrac{3}{4}$ here", "-\\dfrac{3}{4}"),
        ("the answer is $14{,}916$", "14,916"),
        ("we need 10,\\!000 steps", "10,000"),
        ("32, 349", "349"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --------------------------------------------------------------------------------------------------
# Normalisation and graders
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\tfrac 3 4", "\\frac34"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\$18.90", "18.90"),
        ("x \\leftarrow y", "x\\leftarrowy"),
        ("5.", "5."),  # a trailing period is not stripped (not part of the paper's rule)
        ("\\text{ east }", "\\text{east}"),  # \text{} is kept
        (None, ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


EQUIVALENT_BOTH = [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("$5$", "5"),
    ("1,000", "1000"),
    ("0.5", "1/2"),
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("-\\frac{3}{4}", "-0.75"),
    ("\\tfrac{3}{4}", "0.75"),
    ("2.0", "2"),
    ("\\$18.90", "18.9"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
]

EQUIVALENT_SYMBOLIC = [
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("2x+1", "1+2x"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("x=5", "5"),
    ("10,\\!080", "10080"),
    ("90^\\circ", "90"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("1,000,000", "10^6"),
]

NEAR_MISSES = [
    ("-\\frac{1}{2}", "\\frac{1}{2}"),
    ("-5", "5"),
    ("6", "7"),
    ("\\frac{2}{3}", "\\frac{3}{4}"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("\\frac{\\pi}{2}", "\\pi"),
    ("2\\sqrt{3}", "\\sqrt{3}"),
    ("2x-1", "2x+1"),
    ("(3,\\frac{\\pi}{2})", "(\\frac{\\pi}{2},3)"),
    ("0.5001", "0.5"),
    ("\\text{(C)}", "\\text{(D)}"),
    ("1,2", "12"),
    ("\\sqrt{2}", "1.414"),
    ("32, 349", "32349"),  # ", " separates a list; it is never a thousands separator
]


@pytest.mark.parametrize("grader", GRADERS)
@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT_BOTH)
def test_equivalent_forms_both_graders(pred, gold, grader):
    assert is_equivalent(pred, gold, grader=grader)
    assert is_equivalent(gold, pred, grader=grader)


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT_SYMBOLIC)
def test_symbolic_forms_math_verify_only(pred, gold):
    assert is_equivalent(pred, gold)
    assert is_equivalent(gold, pred)
    assert not paper_equivalent(pred, gold)  # beyond what the paper's checker was meant to catch


@pytest.mark.parametrize("grader", GRADERS)
@pytest.mark.parametrize(("pred", "gold"), NEAR_MISSES)
def test_near_misses_are_wrong(pred, gold, grader):
    assert not is_equivalent(pred, gold, grader=grader)
    assert not is_equivalent(gold, pred, grader=grader)


def test_paper_tolerance_is_absolute_1e4():
    assert paper_equivalent("0.33333", "\\frac13")  # |diff| < 1e-4
    assert not paper_equivalent("0.333", "\\frac13")  # |diff| = 3.3e-4
    assert paper_equivalent("1000000.00001", "1,000,000")
    # math-verify is stricter about decimals than the paper's absolute tolerance.
    assert not is_equivalent("0.33333", "\\frac13")


@pytest.mark.parametrize("grader", GRADERS)
def test_none_and_empty_predictions_are_wrong(grader):
    assert is_equivalent(None, "5", grader=grader) is False
    assert is_equivalent("", "5", grader=grader) is False
    assert is_equivalent("$ $", "5", grader=grader) is False
    assert grade("no answer here", "5", grader=grader) == (False, None)


def test_size_guard_uses_paper_checker_only():
    long_sum = "+".join(["x"] * 1200)  # 2399 chars, symbolically equal to 1200x
    assert len(long_sum) > mg.MAX_SYMBOLIC_CHARS
    t0 = time.monotonic()
    assert is_equivalent(long_sum, "1200x") is False
    assert is_equivalent(long_sum, long_sum) is True  # identical strings still match
    assert time.monotonic() - t0 < 2


def test_grade_returns_correctness_and_vote_key():
    text = "Thus $x = \\boxed{\\dfrac{1}{2}}$."
    assert grade(text, "\\frac{1}{2}") == (True, "1/2")
    assert grade(text, "\\frac{1}{3}") == (False, "1/2")
    assert grade(text, "\\frac{1}{2}", grader="paper") == (True, "\\frac{1}{2}")
    assert grade("so 12 apples", "12") == (True, "12")


@pytest.mark.parametrize("bad", ["sympy", "", "Paper"])
def test_unknown_grader_raises(bad):
    for call in (
        lambda: is_equivalent("1", "1", grader=bad),
        lambda: vote_key("1", grader=bad),
        lambda: grade("\\boxed{1}", "1", grader=bad),
    ):
        with pytest.raises(ValueError, match=repr(bad)) as info:
            call()
        assert "math_verify" in str(info.value) and "paper" in str(info.value)


# --------------------------------------------------------------------------------------------------
# Vote keys
# --------------------------------------------------------------------------------------------------


def test_vote_keys_merge_the_one_half_family():
    family = ["\\frac12", "\\dfrac{1}{2}", "1/2", "0.5", "\\tfrac{1}{2}", "$\\frac{1}{2}$", "0.50"]
    assert {vote_key(a) for a in family} == {"1/2"}


@pytest.mark.parametrize(
    ("forms", "key"),
    [
        (["2", "2.0", "02", "+2", "x=2", "$2$"], "2"),
        (["1,000", "1000", "1000.0"], "1000"),
        (["-\\frac{3}{4}", "-0.75", "\\frac{-3}{4}", "-3/4"], "-3/4"),
        (["\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", "\\frac{\\sqrt3}{2}"], None),
        (["2x+1", "1+2x", "2 x + 1"], None),
    ],
)
def test_vote_keys_merge_equivalent_forms(forms, key):
    keys = {vote_key(a) for a in forms}
    assert len(keys) == 1, keys
    if key is not None:
        assert keys == {key}


def test_vote_keys_keep_different_answers_apart():
    answers = ["1/2", "1/3", "-1/2", "2", "3", "\\sqrt{3}", "2\\sqrt{3}", "\\pi", "\\frac{\\pi}{2}", "2x+1"]
    keys = [vote_key(a) for a in answers]
    assert all(isinstance(k, str) for k in keys)
    assert len(set(keys)) == len(answers), keys


def test_vote_key_none_and_paper_key():
    assert vote_key(None) is None
    assert vote_key("") is None
    assert vote_key("  $ $ ") is None
    assert vote_key(None, grader="paper") is None
    # The paper votes on the normalised string.
    assert vote_key("$\\dfrac{1}{2}$", grader="paper") == "\\frac{1}{2}"
    assert vote_key("0.5", grader="paper") == "0.5"


# --------------------------------------------------------------------------------------------------
# Time limits
# --------------------------------------------------------------------------------------------------

ADVERSARIAL = "2^{2^{2^{2^{2^{2^{2}}}}}}"


def test_time_limit_works_off_the_main_thread():
    results: dict = {}

    def work():
        try:
            t0 = time.monotonic()
            results["verdict"] = is_equivalent(ADVERSARIAL, "1", timeout_s=2.0)
            results["key"] = vote_key(ADVERSARIAL, timeout_s=2.0)
            results["elapsed"] = time.monotonic() - t0
        except BaseException as exc:  # noqa: BLE001 - report anything in the main thread
            results["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "is_equivalent hung off the main thread"
    assert "error" not in results, results.get("error")
    assert results["verdict"] is False
    assert isinstance(results["key"], str)
    assert results["elapsed"] < 20


def test_overrunning_worker_is_killed_and_replaced(monkeypatch):
    # Make the caller's hard deadline (timeout + grace) expire long before the worker's own soft
    # limit, as if the worker were stuck in uninterruptible C code: it must be killed, the
    # fallback verdict returned promptly, and a fresh worker used for the next check.
    monkeypatch.setattr(mg, "_GRACE_S", -0.8)
    t0 = time.monotonic()
    assert is_equivalent("9^{9^{9^{9}}}", "2", timeout_s=1.0) is False
    assert time.monotonic() - t0 < 5
    monkeypatch.undo()
    assert is_equivalent("\\frac{\\sqrt{5}}{3}", "\\frac{1}{3}\\sqrt{5}") is True  # not cached


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout_s"):
        is_equivalent("1", "2", timeout_s=0)


# ---- issue 8: grader bugs found against externally labelled answers -----------------------------------

@pytest.mark.parametrize("grader", GRADERS)
@pytest.mark.parametrize(("text", "gold"), [("so x = \\frac{4}{9}.", "\\frac{4}{9}"), ("is $14{,}916$", "14916"),
                                            ("we need 10,\\!000 steps", "10000")])
def test_fallback_tex_numbers_grade_correct(text, gold, grader):
    correct, _ = grade(text, gold, grader=grader)
    assert correct


@pytest.mark.parametrize("grader", GRADERS)
def test_tex_thousands_never_false_accept_their_last_group(grader):
    # before: "10,\!000" extracted "000", which graded equal to a gold "0"
    assert not grade("we need 10,\\!000 steps", "0", grader=grader)[0]
    assert not grade("so x = \\frac{4}{9}.", "9", grader=grader)[0]
    assert not grade("the answer is $14{,}916$", "916", grader=grader)[0]


@pytest.mark.parametrize("grader", GRADERS)
def test_comma_space_is_a_list_not_thousands(grader):
    assert not is_equivalent("32, 349", "32349", grader=grader)
    assert vote_key("32, 349", grader=grader) != vote_key("32349", grader=grader)
    assert is_equivalent("32,349", "32349", grader=grader)  # a real thousands comma still is one


def test_ascii_pi_is_pi_under_math_verify():
    assert is_equivalent("12*pi", "12\\pi")
    assert is_equivalent("2pi", "2\\pi")
    assert vote_key("12*pi") == vote_key("12\\pi")
    assert not is_equivalent("12*pi", "12")
    assert not is_equivalent("pie", "\\pi")  # a word, not pi
