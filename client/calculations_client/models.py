"""A run as the API describes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

ENDED = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Run:
    """One run. A field the answer did not carry is None: a create answers only `id` and
    `status`, a page of the list adds `name` and `created_at`, a get has them all."""

    id: int
    status: str
    created_at: datetime | None = None
    name: str | None = None
    duration: float | None = None
    date_start: date | None = None
    date_fin: date | None = None
    lag: int | None = None
    seed: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int | None = None
    error: str | None = None
    result: list[dict[str, Any]] | None = None

    @property
    def ended(self) -> bool:
        """Done, failed or cancelled: it will not change any more."""
        return self.status in ENDED

    @property
    def done(self) -> bool:
        return self.status == "done"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Run:
        return cls(
            id=body["id"],
            status=body["status"],
            created_at=moment(body.get("created_at")),
            name=body.get("name"),
            duration=body.get("duration"),
            date_start=day(body.get("date_start")),
            date_fin=day(body.get("date_fin")),
            lag=body.get("lag"),
            seed=body.get("seed"),
            started_at=moment(body.get("started_at")),
            finished_at=moment(body.get("finished_at")),
            attempts=body.get("attempts"),
            error=body.get("error"),
            result=body.get("result"),
        )


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def day(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)
