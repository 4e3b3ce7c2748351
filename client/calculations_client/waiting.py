"""The long-poll of `wait`, shared by both clients: how long each `?wait=` asks for, and when
to give up."""

from __future__ import annotations

import time

from calculations_client.errors import Conflict
from calculations_client.models import Run
from calculations_client.protocol import LONGEST_WAIT


class Deadline:
    def __init__(self, calc_id: int, timeout: float | None) -> None:
        self.calc_id, self.timeout = calc_id, timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def hold(self) -> float:
        """Seconds for the next `?wait=`: the most the service takes, or what is left."""
        if self.at is None:
            return LONGEST_WAIT
        return round(min(LONGEST_WAIT, max(0.001, self.at - time.monotonic())), 3)

    def check(self, run: Run) -> None:
        """Raise TimeoutError once the time is up (the run has not ended)."""
        if self.at is not None and time.monotonic() >= self.at:
            raise TimeoutError(f"run {self.calc_id} is still {run.status} after {self.timeout:g} s")


def no_result(run: Run) -> Conflict:
    why = f": {run.error}" if run.error else ""
    return Conflict(409, "no_result", f"run {run.id} ended {run.status}{why}; it has no result")
