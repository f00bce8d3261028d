"""Cache locks: a waiter says who holds the lock and since when; the tiny-model build is atomic and locked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, compose

from cat_experiments import cache
from cat_experiments.models import resolve_model_path

HOLD = """
import sys, time
from pathlib import Path
from cat_experiments.cache import cache_lock
with cache_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_wait_logs_the_holder_until_it_is_free(tmp_path, monkeypatch, caplog):
    """Another process (a SLURM job) holds the lock: the waiter logs its host, pid, job and start time every
    LOCK_LOG_EVERY_S, and gets the lock once the holder is done."""
    monkeypatch.setattr(cache, "LOCK_POLL_S", 0.1)
    monkeypatch.setattr(cache, "LOCK_LOG_EVERY_S", 1.0)
    entry = tmp_path / "warmup" / "abc"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(entry), "3.5"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "SLURM_JOB_ID": "4242"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="cat_experiments"), cache.cache_lock(entry):
            waited = time.monotonic() - t0
            note = (entry.parent / "abc.lock").read_text()
    finally:
        holder.wait(timeout=30)
    waits = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
    assert waited > 2.0 and 3 <= len(waits) <= 5, (waited, waits)  # at once, then every second
    assert all(f"pid {holder.pid}, SLURM job 4242, since " in w and str(entry) + ".lock" in w for w in waits), waits
    assert f'"pid": {os.getpid()}' in note  # the new holder's note replaced the old one
    assert (entry.parent / "abc.lock").read_text() == ""  # and is cleared on release


def test_tiny_model_build_is_atomic(tmp_path, monkeypatch):
    """A build that dies while saving (after the weights, before the tokenizer) leaves nothing in the cache;
    the next call builds a complete model."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = compose(["model.n_embd=32", "model.n_head=2", "model.n_layer=1"]).model

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(cfg, tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    path = resolve_model_path(cfg, tmp_path)
    assert AutoTokenizer.from_pretrained(path).decode([5]) and os.path.exists(os.path.join(path, "model.safetensors"))


def test_tiny_model_build_waits_for_the_lock(tmp_path):
    """A build started while another job holds the entry's lock waits, then finds the model that job built."""
    cfg = compose(["model.n_embd=32", "model.n_head=2", "model.n_layer=1"]).model
    built = resolve_model_path(cfg, tmp_path / "ref")
    out = tmp_path / "models" / os.path.basename(built)
    result = []
    with cache.cache_lock(out):
        thread = threading.Thread(target=lambda: result.append(resolve_model_path(cfg, tmp_path)))
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive() and not out.exists()  # waiting, not building beside us
        os.replace(built, out)  # "the other job" finishes its build
    thread.join(timeout=60)
    assert result == [str(out)]
