"""What a kernel process does with a run: computes it and stores the result itself, so that a
large result never passes through the server process (nor holds its event loop)."""

from __future__ import annotations

import sqlite3
import time
from datetime import date
from pathlib import Path
from typing import NamedTuple

import kernel
from service import db

_conn: sqlite3.Connection | None = None


class Stored(NamedTuple):
    """A run computed in the kernel process; `stored` is False when its attempt was no longer
    the current one (cancelled, timed out, recovered), and nothing was written."""

    stored: bool
    duration: float


def init(server: int, db_path: Path) -> None:
    """The initializer of a kernel process."""
    global _conn
    kernel.init_worker(server)
    _conn = db.connect_worker(db_path)


def compute_and_store(
    calc_id: int, attempt: int, date_start: date, date_fin: date, lag: int, seed: int, delay: float
) -> Stored:
    assert _conn is not None, "init() opens the connection"
    started = time.perf_counter()
    output = kernel.run(date_start, date_fin, lag, seed, delay)
    duration = time.perf_counter() - started
    return Stored(db.store_result(_conn, calc_id, attempt, output, duration), duration)
