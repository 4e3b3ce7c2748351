"""Marshmallow schemas of the ping-pong payload and of its traces (also the OpenAPI docs)."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate

from service.models import Hop, Outcome, Peer, TraceStatus
from service.schemas import MAX_NAME, MAX_PAGE, QueryInteger, StrictInteger

TRACE_ID = r"[A-Za-z0-9_-]{1,64}"
MAX_HOP = 10**9  # far beyond any hop limit, and it keeps every number inside SQLite's INTEGER


class StrictNumber(fields.Float):
    """A finite JSON number: "1.5" is refused (true, NaN and infinities already are)."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid")
        return float(super()._validated(value))


class SequenceEntry(Schema):
    class Meta:
        unknown = EXCLUDE

    hop = StrictInteger(required=True, validate=validate.Range(min=1, max=MAX_HOP))
    service = fields.Enum(Peer, by_value=True, required=True)


class PingPongPayload(Schema):
    """What A and B send each other. Every field may be left out; unknown fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(load_default="payload", validate=validate.Length(max=MAX_NAME))
    digits = fields.List(
        StrictInteger(validate=validate.Range(min=0, max=100)),
        load_default=list,
        metadata={"description": "A appends a random integer 0..100 at each of its hops."},
    )
    avg = StrictNumber(
        allow_none=True,
        load_default=None,
        validate=validate.Range(min=0, max=100),
        metadata={"description": "Mean of digits, set by B; null while digits is empty."},
    )
    max = StrictInteger(allow_none=True, load_default=None, validate=validate.Range(min=0, max=100))
    min = StrictInteger(allow_none=True, load_default=None, validate=validate.Range(min=0, max=100))
    trace_id = fields.String(
        allow_none=True,
        load_default=None,
        validate=validate.Regexp(f"^{TRACE_ID}$", error="Use 1 to 64 of A-Z a-z 0-9 _ -."),
        metadata={"description": "Left out (or null) to start a new pipeline."},
    )
    hop = StrictInteger(
        load_default=0,
        validate=validate.Range(min=0, max=MAX_HOP),
        metadata={"description": "The hop the sender handled; the receiver handles hop + 1."},
    )
    sequence = fields.List(
        fields.Nested(SequenceEntry),
        load_default=list,
        metadata={"description": "Every hop the payload passed through, in order."},
    )


class Accepted(Schema):
    trace_id = fields.String(required=True)
    hop = fields.Integer(required=True, metadata={"description": "The hop just handled."})
    service = fields.Enum(Peer, by_value=True, required=True)
    url = fields.String(required=True, metadata={"description": "Where the trace is read."})


def stored_payload(hop: Hop) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(hop.payload_json)
    return payload


class HopOut(Schema):
    hop = fields.Integer(required=True)
    service = fields.Enum(Peer, by_value=True, required=True)
    outcome = fields.Enum(
        Outcome,
        by_value=True,
        allow_none=True,
        required=True,
        metadata={"description": "null while the service is forwarding to its partner."},
    )
    http_status = fields.Integer(
        required=True, metadata={"description": "What this service answered the sender."}
    )
    partner_status = fields.Integer(
        allow_none=True,
        required=True,
        metadata={"description": "What the partner answered the forward; null if none."},
    )
    detail = fields.String(allow_none=True, required=True)
    received_at = fields.AwareDateTime(required=True)
    finished_at = fields.AwareDateTime(allow_none=True, required=True)
    payload = fields.Function(
        stored_payload,
        required=True,
        metadata={"type": "object", "description": "The payload as this service received it."},
    )


class SummaryOut(Schema):
    status = fields.Enum(TraceStatus, by_value=True, required=True)
    hop = fields.Integer(allow_none=True, metadata={"description": "The hop that stopped it."})
    service = fields.Enum(Peer, by_value=True, allow_none=True)
    outcome = fields.Enum(Outcome, by_value=True, allow_none=True)
    reason = fields.String(allow_none=True)
    payload = fields.Dict(
        allow_none=True, metadata={"description": "The payload as the stopping hop received it."}
    )


class TraceOut(Schema):
    trace_id = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    summary = fields.Nested(SummaryOut, required=True)
    hops = fields.List(fields.Nested(HopOut), required=True)


class TraceItem(Schema):
    trace_id = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    status = fields.Enum(TraceStatus, by_value=True, required=True)
    hops = fields.Integer(required=True, metadata={"description": "Hops recorded so far."})
    url = fields.String(required=True)


class TraceListQuery(Schema):
    page = QueryInteger(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = QueryInteger(load_default=10, validate=validate.Range(min=1, max=100))


class TracePage(Schema):
    items = fields.List(fields.Nested(TraceItem), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)
    pages = fields.Integer(required=True)
