"""The run lifecycle (`Status`) and the `Calculation` record as the rest of the code sees it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


TERMINAL = frozenset({Status.DONE, Status.FAILED})


class Row(Protocol):
    """A database row read by column name (sqlite3.Row is one)."""

    def __getitem__(self, key: str) -> Any: ...

    def keys(self) -> list[str]: ...


def point_count(date_start: date, date_fin: date, lag: int) -> int:
    """How many rows the kernel returns: date_start, date_start + lag, ... up to date_fin."""
    return (date_fin - date_start).days // lag + 1


def _timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Calculation:
    id: int
    name: str
    status: Status
    date_start: date
    date_fin: date
    lag: int
    seed: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    error: str | None
    result_json: str | None  # stored JSON text, served as it is

    @classmethod
    def from_row(cls, row: Row) -> Calculation:
        created_at = _timestamp(row["created_at"])
        assert created_at is not None
        return cls(
            id=row["id"],
            name=row["name"],
            status=Status(row["status"]),
            date_start=date.fromisoformat(row["date_start"]),
            date_fin=date.fromisoformat(row["date_fin"]),
            lag=row["lag"],
            seed=row["seed"],
            attempts=row["attempts"],
            created_at=created_at,
            started_at=_timestamp(row["started_at"]),
            finished_at=_timestamp(row["finished_at"]),
            duration=row["duration"],
            error=row["error"],
            result_json=row["result"] if "result" in row.keys() else None,  # noqa: SIM118 (Row iterates values)
        )
