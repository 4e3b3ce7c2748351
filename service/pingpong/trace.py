"""Where and why a pipeline stopped, read from its recorded hops."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.models import STOPPING, Hop, Outcome, Peer, TraceStatus


@dataclass(frozen=True, slots=True)
class Summary:
    status: TraceStatus
    hop: int | None = None
    service: Peer | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    payload: dict[str, Any] | None = None


def summarize(hops: Sequence[Hop]) -> Summary:
    """The hop that stopped the pipeline, the same rule as `sqlite_traces.TRACE_COLUMNS`' `stopped`.

    Normally exactly one hop has a stopping outcome. After a shutdown there may be two (the
    interrupted one and the partner's later one): the last is where the pipeline really ended.
    """
    stops = [hop for hop in hops if hop.outcome in STOPPING]
    if stops:
        last = stops[-1]
        payload = json.loads(last.payload_json)
        return Summary(
            TraceStatus.STOPPED, last.hop, last.service, last.outcome, last.detail, payload
        )
    # The partner refused, but its own row is not here: it writes to another database.
    refused = [hop for hop in hops if hop.partner_status == 400]
    if refused:
        last = refused[-1]
        return Summary(TraceStatus.STOPPED, last.hop + 1, last.service.partner, None, last.detail)
    return Summary(TraceStatus.RUNNING)
