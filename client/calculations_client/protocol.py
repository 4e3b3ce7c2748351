"""What both clients send and how they read it, without any I/O: the requests of the API,
the retry budget, and the checks of an answer. `Client` and `AsyncClient` only move bytes."""

from __future__ import annotations

import json
import operator
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

from calculations_client.errors import Unavailable, error_of
from calculations_client.models import Run

DEFAULT_URL = "http://127.0.0.1:8080"
RUNS = "/api/v1/calculations"
# Every field a run has, so that a `Run` from `get` is complete.
ALL_FIELDS = "name,duration,date_start,date_fin,lag,seed,started_at,finished_at,attempts"
LONGEST_WAIT = 60  # seconds: the most `?wait=` takes
PAGE_SIZE = 100  # the most `per_page` takes
RETRIED = frozenset({429, 503})  # queue full, database down: both pass by themselves
CONCURRENCY = 8  # the creates `map` keeps under way
PARAMETERS = ("date_start", "date_fin", "lag", "name", "seed")


def settings(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The service's address and token: as given, else the environment, else the default."""
    url = url or os.environ.get("CALCULATIONS_URL") or DEFAULT_URL
    token = token if token is not None else os.environ.get("CALCULATIONS_TOKEN") or None
    return url.rstrip("/"), token


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the API."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    key: str | None = None  # the Idempotency-Key of a create
    holds: float = 0.0  # seconds the service may hold the answer (`?wait=`)
    # An answer with this status on a second try means the first try did the work and its
    # answer was lost: a DELETE answering 404, a cancel answering 409.
    done_before: int | None = None

    def url(self, base: str) -> str:
        return base + self.path + (f"?{urlencode(self.params)}" if self.params else "")

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        if self.key is not None:
            headers["Idempotency-Key"] = self.key
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


def day_text(value: str | date) -> str:
    """`YYYY-MM-DD` of a date, a datetime (a pandas Timestamp too) or text, as given."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def create(
    date_start: str | date,
    date_fin: str | date,
    lag: int,
    name: str | None = None,
    seed: int | None = None,
    idempotency_key: str | None = None,
) -> Call:
    fields: dict[str, Any] = {
        "date_start": day_text(date_start),
        "date_fin": day_text(date_fin),
        "lag": whole(lag),
    }
    if name is not None:
        fields["name"] = name
    if seed is not None:
        fields["seed"] = whole(seed)
    body = json.dumps(fields, separators=(",", ":")).encode()
    return Call("POST", RUNS, body=body, key=idempotency_key or uuid.uuid4().hex)


def whole(value: Any) -> Any:
    """A numpy or pandas integer as a plain int; anything else as it is, for the service to
    judge (a float lag is refused there, with the reason)."""
    try:
        return operator.index(value)
    except TypeError:
        return value


def run_path(calc_id: int) -> str:
    return f"{RUNS}/{quote(str(whole(calc_id)), safe='')}"


def get(calc_id: int, wait: float | None = None) -> Call:
    params = [("fields", ALL_FIELDS)]
    if wait is not None:
        params.append(("wait", f"{wait:.3f}".rstrip("0").rstrip(".")))
    return Call("GET", run_path(calc_id), tuple(params), holds=wait or 0.0)


def page(number: int, status: str | None, order: str) -> Call:
    params = [("page", str(number)), ("per_page", str(PAGE_SIZE)), ("order", order)]
    if status is not None:
        params.append(("status", status))
    return Call("GET", RUNS, tuple(params))


def fresh(page: Mapping[str, Any], seen: set[int]) -> list[Run]:
    """The runs of a page of the list not met on an earlier one: a run created meanwhile
    pushes the others a place on, and none comes twice."""
    found = [Run.from_json(item) for item in page["items"] if item["id"] not in seen]
    seen.update(run.id for run in found)
    return found


def last_page(page: Mapping[str, Any], number: int) -> bool:
    return number >= page["pages"] or not page["items"]


def cancel(calc_id: int) -> Call:
    return Call("POST", f"{run_path(calc_id)}/cancel", done_before=409)


def delete(calc_id: int) -> Call:
    return Call("DELETE", run_path(calc_id), done_before=404)


def csv(calc_id: int) -> Call:
    return Call("GET", f"{run_path(calc_id)}/result.csv")


def sweep(params: Any) -> list[dict[str, Any]]:
    """The parameter sets of `map`: dicts, or a DataFrame's rows, each checked for the
    names a create takes."""
    if hasattr(params, "to_dict") and hasattr(params, "columns"):
        params = params.to_dict("records")
    sets = [dict(one) for one in params]
    for number, one in enumerate(sets):
        problems = []
        if missing := {"date_start", "date_fin", "lag"} - set(one):
            problems.append(f"missing {', '.join(sorted(missing))}")
        if unknown := set(one) - set(PARAMETERS):
            problems.append(f"unknown {', '.join(sorted(unknown))}")
        if problems:
            raise ValueError(
                f"parameter set {number}: {'; '.join(problems)}"
                f" (a set takes {', '.join(PARAMETERS)})"
            )
    return sets


@dataclass(frozen=True, slots=True)
class Retry:
    """How long one request is retried after no answer, a 503 or a 429. A try starts only
    while both bounds hold: at most `attempts` tries, and none `total` seconds after the
    first. Between tries: `Retry-After` when the service sends it, else exponential backoff
    from `backoff` up to `max_backoff` seconds, with jitter."""

    attempts: int = 10
    total: float = 60.0
    backoff: float = 0.25
    max_backoff: float = 8.0

    def pause(self, tried: int, started: float, retry_after: str | None) -> float | None:
        """Seconds to sleep before the next try, or None when the budget is spent."""
        if tried >= self.attempts:
            return None
        pause = seconds_of(retry_after)
        if pause is None:
            pause = min(self.max_backoff, self.backoff * 2 ** (tried - 1))
            pause *= random.uniform(0.5, 1.0)
        if time.monotonic() + pause - started > self.total:
            return None
        return pause


DEFAULT_RETRY = Retry()


def seconds_of(retry_after: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date."""
    if not retry_after:
        return None
    text = retry_after.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class Attempts:
    """The tries of one call under a `Retry`, and what each outcome means: both clients'
    `send` is this loop around their own request."""

    def __init__(self, call: Call, retry: Retry, base: str) -> None:
        self.call, self.retry, self.base = call, retry, base
        self.started, self.tried = time.monotonic(), 0

    def start(self) -> None:
        self.tried += 1

    def unanswered(self, cause: BaseException) -> float:
        """The pause before the next try after no answer; Unavailable once the budget is
        spent, with the transport's error as its cause."""
        pause = self.retry.pause(self.tried, self.started, None)
        if pause is None:
            reason = str(cause) or type(cause).__name__
            message = f"no answer from {self.base} after {self.tried} tries: {reason}"
            raise Unavailable(None, "unreachable", message) from cause
        return pause

    def retry_after(self, status: int, retry_after: str | None) -> float | None:
        """The pause before the next try after this answer; None when it is the last."""
        if status not in RETRIED:
            return None
        return self.retry.pause(self.tried, self.started, retry_after)

    def result(self, status: int, body: bytes) -> bytes | None:
        """The body of a successful answer; None when an earlier try did the work
        (`Call.done_before`). Any other answer of 400 or more raises its typed error."""
        if status < 400:
            return body
        if self.tried > 1 and status == self.call.done_before:
            return None
        raise error_of(status, body)
