"""A kernel process: answers the server's calls through its pipe, and computes each run and
stores its result itself, so that a large result never passes through the server process."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import traceback
from datetime import date
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import kernel
from service import db
from service.models import Calculation

NICENESS = 10  # added to the server's: a kernel process gets the CPU time the server leaves
PARENT_CHECK_INTERVAL = 0.5  # seconds
READY, RETURNED, RAISED = "ready", "returned", "raised"  # what the process sends back

_store: db.ResultStore | None = None


class Stored(NamedTuple):
    """A run computed in the kernel process; `stored` is False when its attempt was no longer
    the current one (cancelled, timed out, recovered), and nothing was written. `claimed`:
    the next run, claimed for the worker in the same commit (PostgreSQL)."""

    stored: bool
    duration: float
    claimed: Calculation | None = None
    looked: bool = False  # at the queue, for `claimed`


def serve(pipe: Connection, server: int, database_url: str) -> None:
    """The process's main loop: one call at a time, until the server closes the pipe."""
    global _store
    # Computing is batch work, answering is not: with the cores busy, the server goes first.
    os.nice(NICENESS)
    # Ctrl-C reaches the whole process group; the server's shutdown handles it, not the kernel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(server,), daemon=True).start()
    import numpy  # noqa: F401 (the first run does not pay for importing them)
    import pandas  # noqa: F401

    _store = db.open_result_store(database_url)
    try:
        pipe.send((READY, None))
        while True:
            fn, args = pipe.recv()
            pipe.send(answer(fn, args))
    except (EOFError, BrokenPipeError):  # the server let go of it, or is gone
        return


def _exit_with_parent(parent: int) -> None:
    """A server killed outright (SIGKILL, out of memory) cannot stop its kernel processes,
    and one in the middle of a long run would not notice its pipe closing until the end:
    they watch for being handed to another parent, and leave."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(1)


def answer(fn: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What `fn(*args)` returned, or what it raised (as itself when it can be pickled) with the
    traceback as text, for the server's log."""
    try:
        return (RETURNED, fn(*args))
    except Exception as exc:
        try:
            pickle.dumps(exc)
            raised = exc
        except Exception:
            raised = RuntimeError(f"{type(exc).__name__}: {exc}")
        return (RAISED, raised, traceback.format_exc())


def compute_and_store(
    calc_id: int,
    attempt: int,
    date_start: date,
    date_fin: date,
    lag: int,
    seed: int,
    delay: float,
    claim_for: int | None = None,
) -> Stored:
    """Compute the run and store it; with `claim_for` (a worker id), also claim the next run
    for that worker where the backend can in the same commit."""
    assert _store is not None, "serve() opens the store"
    started = time.perf_counter()
    output = kernel.run(date_start, date_fin, lag, seed, delay)
    duration = time.perf_counter() - started
    saved = _store.store(calc_id, attempt, output, duration, claim_for)
    return Stored(saved.written, duration, saved.claimed, saved.looked)
