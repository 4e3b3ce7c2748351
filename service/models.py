"""The run lifecycle (`Status`) and the `Calculation` record as the rest of the code sees it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})


class Row(Protocol):
    """A database row read by column name (sqlite3.Row is one)."""

    def __getitem__(self, key: str) -> Any: ...

    def keys(self) -> list[str]: ...


def point_count(date_start: date, date_fin: date, lag: int) -> int:
    """How many rows the kernel returns: date_start, date_start + lag, ... up to date_fin."""
    return (date_fin - date_start).days // lag + 1


def _timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# A stored column read in pieces of at most sqlite_runs.PIECE bytes: each is allocated from the heap
# and given back to it, where one buffer of a whole result would be fresh pages every time.
Pieces = tuple[bytes, ...]


class Deflated(NamedTuple):
    """A stored result as raw deflate blocks, with the CRC-32 and size of the JSON."""

    data: Pieces
    crc: int
    size: int


class Worker(NamedTuple):
    """A process that computes runs, as its record says: where it runs and when it last
    said it was alive."""

    id: int
    host: str
    pid: int
    pid_started: int  # the process's start time, in clock ticks after boot
    heartbeat_at: float  # seconds since the epoch


class Summary(NamedTuple):
    """A run as the list shows it, straight from its row: the list is the hottest read, so
    its timestamps stay the ISO-8601 text they are stored as, never parsed and re-written."""

    id: int
    name: str
    created_at: str
    status: str


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
    result: Pieces | None = None  # stored JSON, served as it is
    deflated: Deflated | None = None  # the same, ready to splice into a gzip answer

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
        )


class Peer(enum.StrEnum):
    """The two services of the ping-pong pipeline."""

    A = "a"
    B = "b"

    @property
    def partner(self) -> Peer:
        return Peer.B if self is Peer.A else Peer.A


class Outcome(enum.StrEnum):
    """How one ping-pong hop ended; a hop has none while its forward is in flight."""

    FORWARDED = "forwarded"
    REFUSED = "refused"
    INVALID = "invalid"
    PARTNER_UNREACHABLE = "partner_unreachable"
    PARTNER_ERROR = "partner_error"
    MAX_HOPS = "max_hops"
    INTERRUPTED = "interrupted"


STOPPING = frozenset(Outcome) - {Outcome.FORWARDED}


class TraceStatus(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Hop:
    trace_id: str
    hop: int
    service: Peer
    outcome: Outcome | None
    http_status: int  # what this service answered the sender
    partner_status: int | None  # what the partner answered the forward
    detail: str | None
    received_at: datetime
    finished_at: datetime | None
    payload_json: str  # the payload as received, JSON text

    @classmethod
    def from_row(cls, row: Row) -> Hop:
        received_at = _timestamp(row["received_at"])
        assert received_at is not None
        return cls(
            trace_id=row["trace_id"],
            hop=row["hop"],
            service=Peer(row["service"]),
            outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
            http_status=row["http_status"],
            partner_status=row["partner_status"],
            detail=row["detail"],
            received_at=received_at,
            finished_at=_timestamp(row["finished_at"]),
            payload_json=row["payload"],
        )


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    created_at: datetime
    hops: int
    status: TraceStatus

    @classmethod
    def from_row(cls, row: Row) -> Trace:
        created_at = _timestamp(row["created_at"])
        assert created_at is not None
        return cls(
            trace_id=row["trace_id"],
            created_at=created_at,
            hops=row["hops"],
            status=TraceStatus.STOPPED if row["stopped"] else TraceStatus.RUNNING,
        )
