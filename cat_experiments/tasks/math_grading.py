"""MATH answer extraction, equivalence checking and majority-vote keys.

Two graders are offered:

``"paper"``
    The checker described in the paper (method.md section 4): take the last ``\\boxed{}`` /
    ``\\fbox{}`` content (else the last number), normalise both sides with :func:`normalize_answer`,
    and call them equal when the strings match or both are numeric scalars within ``1e-4``.

``"math_verify"`` (default)
    Symbolic equivalence with `math-verify <https://github.com/huggingface/Math-Verify>`_. Identical
    normalised strings are accepted without calling it; when math-verify cannot parse either side
    (or fails, or runs out of time) the verdict falls back to the paper checker.

Time limits. math-verify's own timeouts use ``signal.alarm``, which only works on the main thread
and cannot interrupt long C-level work such as ``2**(2**65536)``. So every math-verify call here runs
in a small, lazily created pool of worker *processes* (plain ``subprocess`` children speaking JSON
lines over pipes; math-verify's timeouts are switched off inside them with ``parsing_timeout=None`` /
``timeout_seconds=None``). The calling thread waits at most ``timeout_s`` (plus about a second of
grace) for the answer; a worker that overruns is killed and replaced on demand, and the caller gets
the fallback verdict (the paper checker) instead. This works from any thread, from daemonic
multiprocessing workers, and after ``fork`` (a forked child starts its own pool). Inputs longer than
:data:`MAX_SYMBOLIC_CHARS` characters skip math-verify and use the paper checker only.

Model text is never evaluated: numbers are parsed with regular expressions and
:class:`fractions.Fraction`, everything else goes through math-verify's LaTeX parser.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

__all__ = [
    "GRADERS",
    "MAX_SYMBOLIC_CHARS",
    "extract_answer",
    "grade",
    "is_equivalent",
    "last_boxed",
    "normalize_answer",
    "paper_equivalent",
    "vote_key",
]

logger = logging.getLogger(__name__)

#: Grader names accepted by :func:`is_equivalent`, :func:`vote_key` and :func:`grade`.
GRADERS: tuple[str, ...] = ("math_verify", "paper")

#: Answers longer than this (in characters, either side) are checked by the paper checker only.
MAX_SYMBOLIC_CHARS = 2000

#: Absolute tolerance of the paper's numeric comparison.
PAPER_TOLERANCE = Fraction(1, 10_000)

# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_UNBRACED_BOX_RE = re.compile(r"[^\s$]+")

# A number: thousands-grouped ("1,000", "12,345.6") or plain ("42", "-3.5", ".5"), optionally a
# simple fraction "a/b". Commas only count as thousands separators (groups of exactly 3 digits), so
# "1,2" (a list) is two numbers, not twelve.
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_IN_TEXT = rf"(?<![\w.])-?(?:{_UNSIGNED})(?:/(?:{_UNSIGNED}))?"
# The fallback's view of a text: TeX numbers are read whole. Thousands written with TeX spacing
# ("14{,}916", "10,\!000") become plain "14,916" / "10,000"; a \frac{a}{b} (or \dfrac, \tfrac,
# \frac12) is one token, so its denominator is never taken for "the last number".
_TEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!)(?=\d{3}(?!\d))")
_TEX_FRAC_IN_TEXT = rf"-?\\[dt]?frac(?:\{{\s*-?(?:{_UNSIGNED})\s*\}}|\d)(?:\{{\s*-?(?:{_UNSIGNED})\s*\}}|\d)"
_FALLBACK_RE = re.compile(rf"{_TEX_FRAC_IN_TEXT}|{_NUMBER_IN_TEXT}")
# "a, b" (comma and space) is a list, never a thousands separator: "32, 349" is not 32349.
_LIST_COMMA_RE = re.compile(r",\s")


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last non-overlapping match of ``pattern`` in ``text``, or ``None``."""
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def last_boxed(text: str | None) -> str | None:
    """Return the content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); escaped braces
    ``\\{`` / ``\\}`` do not count. The unbraced form ``\\boxed 5`` gives the following run of
    non-space, non-``$`` characters with trailing sentence punctuation (``.,;:!?``) removed.

    Only the *last* box counts, as in the MATH reference code: if it is not closed (e.g. a truncated
    generation), the result is ``None`` rather than an earlier box. Returns ``None`` when there is
    no box. The content is returned as written (not stripped or normalised).
    """
    if not text:
        return None
    last = _last_match(_BOX_RE, text)
    if last is None:
        return None
    i = last.end()
    n = len(text)
    j = i
    while j < n and text[j].isspace():
        j += 1
    if j < n and text[j] == "{":
        depth = 0
        k = j
        while k < n:
            c = text[k]
            if c == "\\":
                k += 2  # skip the escaped character (\{, \}, \\)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[j + 1 : k]
            k += 1
        return None  # unbalanced
    m = _UNBRACED_BOX_RE.match(text, j)
    if m is None:
        return None
    content = m.group(0).rstrip(".,;:!?")
    return content or None


def extract_answer(text: str | None) -> str | None:
    """Extract the final answer from a completion, following the paper's rule.

    1. The content of the last ``\\boxed{}`` / ``\\fbox{}`` (see :func:`last_boxed`), stripped of
       surrounding whitespace.
    2. Otherwise the last number in the text: integers, decimals, negative numbers, simple
       fractions ``3/4``, TeX fractions ``\\frac{4}{9}`` (whole, never just the denominator) and
       thousands-grouped numbers ``1,000`` (returned as written, e.g. ``"1,000"``; TeX-spaced
       thousands ``14{,}916`` and ``10,\\!000`` come back as ``"14,916"`` and ``"10,000"``). A
       trailing sentence period is not part of the number.
    3. Otherwise ``None``.

    A box with empty content (``\\boxed{}``) counts as "no answer" and gives ``None`` (the model
    did box something, so we do not fall back to a stray number elsewhere in the text).
    """
    if not text:
        return None
    if _BOX_RE.search(text):
        boxed = last_boxed(text)
        if boxed is not None:
            boxed = boxed.strip()
            return boxed or None
        # The last box is unbalanced (truncated): fall through to the last number.
    last = _last_match(_FALLBACK_RE, _TEX_THOUSANDS_RE.sub(",", text))
    return None if last is None else last.group(0)


# --------------------------------------------------------------------------------------------------
# The paper's checker
# --------------------------------------------------------------------------------------------------

_DOLLAR_RE = re.compile(r"\\?\$")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_DFRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_SPACE_RE = re.compile(r"\s+")


def normalize_answer(ans: str | None) -> str:
    """Normalise an answer string exactly as the paper's checker does, and nothing more.

    Steps, in order:

    1. strip dollar signs: every ``$`` is removed, including the escaped currency sign ``\\$``
       (backslash and all), so ``$5$`` and ``\\$5`` both become ``5``;
    2. remove ``\\left`` and ``\\right`` (as whole control words: ``\\leftarrow`` is kept);
    3. ``\\dfrac`` and ``\\tfrac`` become ``\\frac``;
    4. remove all whitespace.

    Deliberately *not* done (the paper's checker does not do it): stripping a trailing period,
    unwrapping ``\\text{...}``, removing units, degrees, ``\\!`` / ``\\,`` spacing, or ``x=``
    prefixes. ``None`` gives ``""``.
    """
    if ans is None:
        return ""
    s = _DOLLAR_RE.sub("", ans)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _DFRAC_RE.sub(r"\\frac", s)
    return _SPACE_RE.sub("", s)


_SIGNED = rf"[+-]?(?:{_UNSIGNED})"
_SCALAR_NUMBER_RE = re.compile(rf"{_SIGNED}|[+-]?\d+\.")
_SCALAR_SLASH_RE = re.compile(rf"({_SIGNED})/({_UNSIGNED})")
_SCALAR_FRAC_RE = re.compile(rf"([+-]?)\\frac(?:\{{({_SIGNED})\}}|(\d))(?:\{{({_SIGNED})\}}|(\d))")


def _to_fraction(number: str) -> Fraction | None:
    try:
        return Fraction(Decimal(number.replace(",", "")))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def _ratio(num: str, den: str) -> Fraction | None:
    a, b = _to_fraction(num), _to_fraction(den)
    if a is None or b is None or b == 0:
        return None
    return a / b


def _parse_scalar(normalised: str) -> Fraction | None:
    """Exact value of a numeric scalar in a *normalised* answer, else ``None``.

    Accepted: plain numbers (``42``, ``-3.5``, ``.5``, ``5.``, ``+2``, ``007``, thousands-grouped
    ``1,000``), ``a/b`` with such numbers, and ``\\frac{a}{b}`` including TeX's digit shorthand
    (``\\frac12``, ``\\frac1{2}``) and a leading sign (``-\\frac{1}{2}``, ``\\frac{-1}{2}``).
    Zero denominators give ``None``. No ``sqrt``, ``pi``, exponents or units.
    """
    if not normalised or len(normalised) > 200:
        return None
    if _SCALAR_NUMBER_RE.fullmatch(normalised):
        return _to_fraction(normalised)
    m = _SCALAR_SLASH_RE.fullmatch(normalised)
    if m:
        return _ratio(m.group(1), m.group(2))
    m = _SCALAR_FRAC_RE.fullmatch(normalised)
    if m:
        value = _ratio(m.group(2) or m.group(3), m.group(4) or m.group(5))
        if value is not None and m.group(1) == "-":
            value = -value
        return value
    return None


def paper_equivalent(pred: str | None, gold: str | None) -> bool:
    """The paper's checker: equal normalised strings, or numeric scalars within ``1e-4``.

    Both sides go through :func:`normalize_answer`. An empty normalised prediction is never
    correct. Numeric scalars are those :func:`_parse_scalar` accepts (plain numbers possibly with
    thousands commas, ``a/b``, ``\\frac{a}{b}`` / ``\\frac12``); the comparison
    ``|a - b| < 1e-4`` is done exactly with fractions.
    """
    if pred is None or gold is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    a, b = _scalar_of(pred, p), _scalar_of(gold, g)
    return a is not None and b is not None and abs(a - b) < PAPER_TOLERANCE


def _scalar_of(raw: str, normalised: str) -> Fraction | None:
    """:func:`_parse_scalar` of a normalised answer, except that an answer whose raw form has a
    comma followed by a space ("32, 349", a list) is never a scalar, though normalisation removed
    the space."""
    return None if _LIST_COMMA_RE.search(raw) else _parse_scalar(normalised)


# --------------------------------------------------------------------------------------------------
# Worker processes running math-verify under a hard time limit
# --------------------------------------------------------------------------------------------------

_WORKER_FLAG = "--cat-math-grading-worker"
_STARTUP_TIMEOUT_S = 60.0
_GRACE_S = 1.0
_RETRY_AFTER_FAILED_START_S = 60.0
_MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))
_CACHE_SIZE = 100_000


class _WorkerError(RuntimeError):
    """A worker could not start, crashed, timed out or reported an error."""


class _Worker:
    """One math-verify child process; used by one thread at a time."""

    def __init__(self) -> None:
        self._ids = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            # -P: do not put this file's folder on sys.path (a sibling named e.g. math.py would
            # shadow the standard library); the worker only needs the stdlib and math-verify.
            [sys.executable, "-P", str(Path(__file__).resolve()), _WORKER_FLAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            close_fds=True,
        )
        reader = threading.Thread(target=self._read, name="math-grading-reader", daemon=True)
        reader.start()
        hello = self._next_message(time.monotonic() + _STARTUP_TIMEOUT_S)
        if not hello.get("ready"):
            self.kill()
            raise _WorkerError(f"math-verify worker failed to start: {hello.get('error')}")

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _next_message(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.kill()
            raise _WorkerError("timed out")
        try:
            line = self._lines.get(timeout=remaining)
        except queue.Empty:
            self.kill()
            raise _WorkerError("timed out") from None
        if line is None:
            self.kill()
            raise _WorkerError("worker exited")
        return json.loads(line)

    def request(self, op: str, args: dict, timeout_s: float):
        """Run ``op`` in the worker; soft limit ``timeout_s`` there, hard limit here."""
        self._ids += 1
        msg = {"id": self._ids, "op": op, "timeout": timeout_s, **args}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self.kill()
            raise _WorkerError(f"cannot write to worker: {exc}") from exc
        deadline = time.monotonic() + timeout_s + _GRACE_S
        while True:
            reply = self._next_message(deadline)
            if reply.get("id") == self._ids:
                break
        if not reply.get("ok"):
            raise _WorkerError(str(reply.get("error")))
        return reply.get("result")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass


class _Pool:
    """A small, lazily grown set of workers; at most ``max_workers`` exist at once."""

    def __init__(self, max_workers: int) -> None:
        self.pid = os.getpid()
        self.max_workers = max_workers
        self.idle: list[_Worker] = []
        self.count = 0
        self.all: set[_Worker] = set()
        self.cond = threading.Condition()
        self.disabled_until = 0.0

    def acquire(self, wait_s: float) -> _Worker:
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                if time.monotonic() < self.disabled_until:
                    raise _WorkerError("math-verify workers disabled after a failed start")
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    self._forget(worker)
                if self.count < self.max_workers:
                    self.count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _WorkerError("no math-verify worker free")
                self.cond.wait(remaining)
        try:
            worker = _Worker()
        except Exception as exc:
            with self.cond:
                self.count -= 1
                self.disabled_until = time.monotonic() + _RETRY_AFTER_FAILED_START_S
                self.cond.notify()
            logger.warning("math-verify worker unavailable, using the paper checker: %s", exc)
            raise _WorkerError(str(exc)) from exc
        with self.cond:
            self.all.add(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        self.all.discard(worker)
        self.count -= 1

    def release(self, worker: _Worker, healthy: bool) -> None:
        with self.cond:
            if healthy and worker.alive():
                self.idle.append(worker)
            else:
                self._forget(worker)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            workers = list(self.all)
            self.all.clear()
            self.idle.clear()
        if os.getpid() != self.pid:
            return  # inherited through fork: these processes belong to the parent
        for worker in workers:
            worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _get_pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = _Pool(_MAX_WORKERS)  # first use, or a forked child: never share pipes
        return _POOL


@atexit.register
def _close_pool() -> None:
    pool = _POOL
    if pool is not None:
        pool.close()


def _run_in_worker(op: str, args: dict, timeout_s: float):
    """Run ``op`` in a worker process; raise :class:`_WorkerError` on any failure or timeout."""
    pool = _get_pool()
    worker = pool.acquire(wait_s=_STARTUP_TIMEOUT_S + timeout_s + _GRACE_S)
    healthy = False
    try:
        result = worker.request(op, args, timeout_s)
        healthy = True
        return result
    except _WorkerError:
        healthy = worker.alive()
        raise
    finally:
        pool.release(worker, healthy)


class _LRU:
    """A small thread-safe LRU cache (only successful results are stored)."""

    _MISSING = object()

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.data.get(key, self._MISSING)
            if value is not self._MISSING:
                self.data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_VERDICTS = _LRU(_CACHE_SIZE)
_SYMBOLIC_KEYS = _LRU(_CACHE_SIZE)


def _math_verify_verdict(pred: str, gold: str, timeout_s: float) -> bool | None:
    """math-verify's verdict (``verify(gold, pred)``), or ``None`` when it has none.

    ``None`` means: math-verify could not parse one of the sides into a SymPy object, raised, or
    did not finish within ``timeout_s`` (plus grace). Successful verdicts are cached.
    """
    cached = _VERDICTS.get((pred, gold))
    if cached is not _LRU._MISSING:
        return cached
    try:
        result = _run_in_worker("verify", {"pred": pred, "gold": gold}, timeout_s)
    except _WorkerError as exc:
        logger.debug("math-verify gave no verdict (%s); using the paper checker", exc)
        return None
    verdict = None if result is None else bool(result)
    _VERDICTS.put((pred, gold), verdict)
    return verdict


# --------------------------------------------------------------------------------------------------
# Public checking API
# --------------------------------------------------------------------------------------------------


def _check_grader(grader: str) -> None:
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; allowed graders: {', '.join(GRADERS)}")


def _check_timeout(timeout_s: float) -> float:
    timeout_s = float(timeout_s)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    return timeout_s


def is_equivalent(
    pred: str | None, gold: str | None, grader: str = "math_verify", timeout_s: float = 5.0
) -> bool:
    """Whether the predicted answer ``pred`` matches the reference answer ``gold``.

    ``grader="paper"`` is :func:`paper_equivalent`. ``grader="math_verify"`` (default): identical
    normalised strings are equal; otherwise both sides are parsed by math-verify (bare answers are
    wrapped in ``$...$``; LaTeX and plain-expression extraction) and compared with
    ``verify(gold, pred)``. If math-verify cannot parse either side into a SymPy object, raises, or
    takes longer than ``timeout_s`` seconds (the check is then abandoned and its worker process
    killed), or either input is longer than :data:`MAX_SYMBOLIC_CHARS`, the paper checker decides.
    Safe to call from any thread. ``pred`` (or ``gold``) ``None`` gives ``False``.

    Raises:
        ValueError: unknown ``grader`` or non-positive ``timeout_s``.
    """
    _check_grader(grader)
    timeout_s = _check_timeout(timeout_s)
    if pred is None or gold is None:
        return False
    if grader == "paper":
        return paper_equivalent(pred, gold)
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    if len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
        return paper_equivalent(pred, gold)
    verdict = _math_verify_verdict(_ascii_pi(pred.strip()), _ascii_pi(gold.strip()), timeout_s)
    if verdict is None:
        return paper_equivalent(pred, gold)
    return verdict


_ASSIGNMENT_RE = re.compile(r"[A-Za-z]=([^=]+)")
# A bare ASCII "pi" (not \pi, not inside a word such as "pie" or "\phi") means pi: math-verify alone
# reads "12*pi" as 12*p*i.
_ASCII_PI_RE = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")


def _ascii_pi(answer: str) -> str:
    """``pi`` written in ASCII as TeX's ``\\pi``, for math-verify (``12*pi`` -> ``12*\\pi``)."""
    return _ASCII_PI_RE.sub(r"\\pi", answer)


def _fraction_key(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def vote_key(answer: str | None, grader: str = "math_verify", timeout_s: float = 5.0) -> str | None:
    """A canonical string for majority voting, so that equivalent answers vote together.

    ``None`` or an answer that normalises to ``""`` gives ``None``.

    ``grader="paper"``: the paper's key, i.e. :func:`normalize_answer` of the answer (so ``0.5``
    and ``1/2`` vote apart, as in the paper).

    ``grader="math_verify"`` (default), after :func:`normalize_answer`:

    * a single equation with a single-letter left-hand side is keyed by its right-hand side
      (``x=2`` votes with ``2``, ``y=2x+1`` with ``2x+1``); ``f(x)=...``, ``x+y=3`` and answers
      with several ``=`` (``x=1,y=2``) are left whole;
    * numeric scalars (see :func:`_parse_scalar`: integers, decimals, ``a/b``, ``\\frac{a}{b}``,
      ``\\frac12``, thousands commas) become the exact reduced fraction: ``"1/2"`` for
      ``\\frac12``, ``\\dfrac{1}{2}``, ``\\tfrac{1}{2}``, ``1/2``, ``0.5``; ``"2"`` for ``2``,
      ``2.0``, ``02``, ``+2``; ``"1000"`` for ``1,000``;
    * anything else is parsed by math-verify in a worker process (same time limit as
      :func:`is_equivalent`); floats are made exact rationals, the expression is simplified with
      SymPy where that finishes in time, and its ``str`` is the key (e.g. ``"sqrt(3)/2"`` for both
      ``\\frac{\\sqrt{3}}{2}`` and ``\\frac{1}{2}\\sqrt{3}``; rational results use the same
      ``"p/q"`` form as above);
    * if that fails (unparseable, error, timeout, input over :data:`MAX_SYMBOLIC_CHARS`), the
      normalised string itself.

    Keys are plain strings and do not depend on the process (no ids or hash order). A key obtained
    after a timeout is the normalised string, so a pathological answer may vote apart from an
    equivalent one.
    """
    _check_grader(grader)
    timeout_s = _check_timeout(timeout_s)
    if answer is None:
        return None
    norm = normalize_answer(answer)
    if not norm:
        return None
    if grader == "paper":
        return norm
    m = _ASSIGNMENT_RE.fullmatch(norm)
    if m:
        norm = m.group(1)
    value = _scalar_of(answer, norm)
    if value is not None:
        return _fraction_key(value)
    if len(norm) > MAX_SYMBOLIC_CHARS:
        return norm
    if _LIST_COMMA_RE.search(answer):  # a list "32, 349": keep its separators for math-verify
        norm = norm.replace(",", ", ")
    cached = _SYMBOLIC_KEYS.get(norm)
    if cached is not _LRU._MISSING:
        return cached
    try:
        key = _run_in_worker("key", {"answer": _ascii_pi(norm)}, timeout_s)
    except _WorkerError as exc:
        logger.debug("no symbolic vote key (%s); using the normalised string", exc)
        return norm
    key = key if isinstance(key, str) and key else norm
    _SYMBOLIC_KEYS.put(norm, key)
    return key


def grade(
    completion_text: str | None,
    gold_answer: str,
    grader: str = "math_verify",
    timeout_s: float = 5.0,
) -> tuple[bool, str | None]:
    """Grade a completion: ``(is_equivalent(extract_answer(text), gold), vote_key(extracted))``.

    The vote key uses the same ``grader`` (``None`` when no answer could be extracted).
    """
    _check_grader(grader)
    answer = extract_answer(completion_text)
    correct = is_equivalent(answer, gold_answer, grader=grader, timeout_s=timeout_s)
    return correct, vote_key(answer, grader=grader, timeout_s=timeout_s)


# --------------------------------------------------------------------------------------------------
# Worker side (runs in the child process started by _Worker)
# --------------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised by the worker's interval timer. A BaseException so that math-verify's broad
    ``except Exception`` handlers cannot turn it into a verdict."""


def _worker_main() -> None:  # pragma: no cover - runs in a child process
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    # Keep the protocol channel private: anything printed by libraries goes to stderr.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        import sympy
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    except Exception as exc:  # math-verify missing or broken
        send({"ready": False, "error": repr(exc)})
        return

    def on_alarm(signum, frame):
        raise _SoftTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def mv_parse(text: str) -> list:
        text = text.strip()
        if not re.search(r"(?<!\\)\$", text):
            text = f"${text}$"
        return parse(text, extraction_config=configs, parsing_timeout=None)

    def first_sympy(parsed: list):
        for item in parsed:
            if isinstance(item, (sympy.Basic, sympy.MatrixBase)):
                return item
        return None

    def do_verify(pred: str, gold: str) -> bool | None:
        g, p = mv_parse(gold), mv_parse(pred)
        if first_sympy(g) is None or first_sympy(p) is None:
            return None
        return bool(verify(g, p, timeout_seconds=None))

    def exact(expr):
        floats = expr.atoms(sympy.Float) if isinstance(expr, sympy.Basic) else set()
        if floats:
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
        return expr

    def as_key(expr) -> str:
        if isinstance(expr, sympy.Rational):
            return _fraction_key(Fraction(int(expr.p), int(expr.q)))
        return str(expr)

    def do_key(answer: str) -> str | None:
        expr = first_sympy(mv_parse(answer))
        if expr is None:
            return None
        expr = exact(expr)
        key = as_key(expr)
        if isinstance(expr, sympy.Expr) and not isinstance(expr, sympy.Rational):
            try:
                key = as_key(sympy.simplify(expr))
            except _SoftTimeout:
                pass  # keep the unsimplified form
            except Exception:
                pass
        return key

    send({"ready": True})
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        reply: dict = {"id": req.get("id")}
        try:
            signal.setitimer(signal.ITIMER_REAL, max(float(req.get("timeout", 5.0)), 0.01))
            try:
                if req.get("op") == "verify":
                    result = do_verify(req["pred"], req["gold"])
                elif req.get("op") == "key":
                    result = do_key(req["answer"])
                else:
                    raise ValueError(f"unknown op {req.get('op')!r}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            reply.update(ok=True, result=result)
        except _SoftTimeout:
            reply.update(ok=False, error="timeout")
        except Exception as exc:
            reply.update(ok=False, error=repr(exc)[:500])
        try:
            send(reply)
        except _SoftTimeout:  # the timer fired just before it was cancelled
            send({"id": req.get("id"), "ok": False, "error": "timeout"})


if __name__ == "__main__" and _WORKER_FLAG in sys.argv[1:]:  # pragma: no cover
    _worker_main()
