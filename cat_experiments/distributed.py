"""Several processes: who is who, and the few collectives the stages need.

A run is distributed when a launcher says so:

- ``torchrun`` or ``accelerate launch`` set ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_*``;
- a SLURM (or submitit local) job with several tasks sets ``SLURM_NTASKS`` (``SUBMITIT_LOCAL_NTASKS``):
  submitit's ``TorchDistributedEnvironment`` exports the torch variables from it.

:func:`init` then starts torch.distributed through accelerate's ``PartialState`` (gloo on CPU, NCCL
on GPU), the same state the TRL trainers use, so the trainers run DDP (or FSDP / DeepSpeed from an
accelerate config file) with no further set-up. In one process every helper here is a no-op.

The rule the stages follow: one rank (the main one) decides and builds shared artefacts (tiny model,
cache entries, records, W&B run); it alone takes the cache's file locks, so no rank ever waits on a
lock that a peer holds while the peer waits in a collective. The others learn the decision through a
broadcast and meet the main rank at barriers.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("cat_experiments")

# Ranks wait for the main one in a collective while it waits for another grid job's warmup (file
# lock) or trains alone: allow hours, not the 10-30 minutes of torch's defaults. A rank that fails does
# not leave the others waiting that long: see fail_together.
DEFAULT_TIMEOUT_MIN = 12 * 60
# fail_together: the store key a failing rank sets, and how often every rank looks at it.
FAILED_KEY = "cat_experiments/failed"
WATCH_EVERY_S = 5.0


def launcher_world_size(env: dict[str, str] | None = None) -> int:
    """The number of processes the launcher started (1 when none): WORLD_SIZE, else SLURM's or
    submitit-local's task count."""
    env = os.environ if env is None else env
    for key in ("WORLD_SIZE", "SLURM_NTASKS", "SUBMITIT_LOCAL_NTASKS"):
        if env.get(key):
            return int(env[key])
    return 1


def _export_from_job_environment() -> None:
    """A multi-task SLURM / submitit job: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from
    the job's environment (submitit's helper; the port is derived from the job id, the same on all tasks)."""
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    log.info("distributed: task %d of %d from the job environment, master %s:%s", env.rank, env.world_size,
             env.master_addr, env.master_port)


def init(cpu: bool, timeout_min: int | None = None) -> Any:
    """Start torch.distributed (gloo when ``cpu``, else NCCL) when a launcher asked for several
    processes; returns the accelerate PartialState (None in one process). Idempotent."""
    world = launcher_world_size()
    if world <= 1:
        return None
    if "WORLD_SIZE" not in os.environ:
        _export_from_job_environment()
    from accelerate import PartialState

    minutes = timeout_min or DEFAULT_TIMEOUT_MIN
    state = PartialState(cpu=cpu, timeout=datetime.timedelta(minutes=int(minutes)))
    atexit.unregister(destroy_at_exit)  # once, however often init is called
    atexit.register(destroy_at_exit)
    log.info("distributed: rank %d of %d (%s, backend %s)", state.process_index, state.num_processes,
             state.device, getattr(state, "backend", None))
    return state


def destroy_at_exit() -> None:
    """Destroy the process group while the interpreter is still alive. Left to interpreter finalization,
    gloo's worker threads can still hold work objects, and tearing them down aborts the process
    ("terminate called without an active exception", SIGABRT; seen once in CI on the rank that finished
    first; pytorch/pytorch PR 179291 describes the cause)."""
    d = _dist()
    if d is not None:
        d.destroy_process_group()


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    d = _dist()
    return d.get_world_size() if d else 1


def rank() -> int:
    d = _dist()
    return d.get_rank() if d else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    d = _dist()
    if d:
        d.barrier()


def broadcast(obj: Any) -> Any:
    """The main rank's ``obj`` on every rank (any picklable object)."""
    d = _dist()
    if not d:
        return obj
    box = [obj]
    d.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    d = _dist()
    if not d:
        return [obj]
    out: list[Any] = [None] * d.get_world_size()
    d.all_gather_object(out, obj)
    return out


def shard(n: int) -> range:
    """The items of ``range(n)`` this rank handles: every world_size-th, starting at the rank."""
    return range(rank(), n, world_size())


# ---- ranks fail together -----------------------------------------------------------------------------------

def _store(timeout_s: float = 30):
    """A client of the job's rendezvous store (torchrun's agent, or rank 0's TCPStore under SLURM)."""
    import torch.distributed as td

    return td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                       timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)


def _flush_logs() -> None:
    for handler in [*logging.getLogger().handlers, *log.handlers]:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


class _Watchdog(threading.Thread):
    """Ends this process when a peer has reported a failure, or when the store is gone (rank 0, which
    hosts it outside torchrun, died): whatever this rank is doing, a collective, a lock wait or work of
    its own."""

    def __init__(self):
        super().__init__(name="cat-fail-together", daemon=True)
        self.done = threading.Event()
        self.store = _store()

    def run(self) -> None:
        while not self.done.wait(WATCH_EVERY_S):
            try:
                failed = self.store.get(FAILED_KEY).decode() if self.store.check([FAILED_KEY]) else None
            except Exception as err:  # noqa: BLE001 - any store error means the job's rendezvous is gone
                failed = f"the job's rendezvous store is gone ({type(err).__name__}): rank 0 or the launcher died"
            if failed and not self.done.is_set():
                log.error("rank %d: ending because %s", rank(), failed)
                _flush_logs()
                os._exit(1)


@contextmanager
def fail_together() -> Iterator[None]:
    """Around a run's work on every rank: ranks fail together. A rank that raises logs its traceback,
    reports the failure in the job's store and exits at once (nothing in its clean-up can keep it alive);
    every rank's watchdog reads that report (or finds the store gone) every WATCH_EVERY_S and ends its
    process too. A peer blocked in a gloo collective fails at once anyway, but one that waits for a lock
    or works alone would otherwise go on for hours. The ranks leave together through a barrier, so no
    rank stops watching while a peer can still fail. In one process: nothing."""
    if world_size() <= 1:
        yield
        return
    watchdog = _Watchdog()
    watchdog.start()
    try:
        yield
        barrier()
    except SystemExit:  # a requested exit (a signal handler's): tell the others, keep its exit code
        _report_failure(f"rank {rank()} exited")
        raise
    except BaseException:
        watchdog.done.set()
        first = _report_failure(f"rank {rank()} failed: {traceback.format_exc(limit=-1).strip()}")
        log.error("rank %d failed%s:\n%s", rank(), "" if first is None else f" (after {first})",
                  traceback.format_exc())
        _flush_logs()
        os._exit(1)
    finally:
        watchdog.done.set()


def _report_failure(message: str) -> str | None:
    """Set the failure report unless a peer set one first; returns the peer's report, or None."""
    try:
        current = _store(timeout_s=3).compare_set(FAILED_KEY, "", message).decode()  # short: it may be gone
    except Exception:  # noqa: BLE001 - the store may be gone with the rank that failed first
        return "the job's rendezvous store is gone"
    return None if current == message else current
