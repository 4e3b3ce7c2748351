"""What this process learns happens to runs, and who is waiting to hear it.

Three things are told: a run was queued (an idle consumer claims it), a run ended (a ?wait
answers), a running run was cancelled (the consumer computing it stops its kernel). This
process's own handlers and consumer tell them; on PostgreSQL the database tells them too,
whichever process made the change (`postgres.Listener`), so `shared` is True there. On
SQLite nothing arrives from other processes: those who wait also look at the row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator


class RunEvents:
    def __init__(self) -> None:
        self._watchers: dict[int, set[asyncio.Event]] = {}
        self.on_queued: list[Callable[[], None]] = []
        self.on_cancelled: list[Callable[[int], object]] = []
        self.shared = False  # whether other processes' changes are told here too

    def queued(self) -> None:
        for callback in self.on_queued:
            callback()

    def cancelled(self, calc_id: int) -> None:
        for callback in self.on_cancelled:
            callback(calc_id)

    def ended(self, calc_id: int) -> None:
        """Wake whoever waits for this run to end."""
        for event in self._watchers.pop(calc_id, ()):
            event.set()

    def wake_all(self) -> None:
        """Release every waiting request, so that a shutdown does not wait for them."""
        for calc_id in list(self._watchers):
            self.ended(calc_id)

    @contextlib.contextmanager
    def watch(self, calc_id: int) -> Iterator[asyncio.Event]:
        """An event set when the run ends. Enter it before reading the row, so that a run
        ending in between still sets it."""
        event = asyncio.Event()
        self._watchers.setdefault(calc_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(calc_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[calc_id]
