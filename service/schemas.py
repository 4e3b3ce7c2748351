"""Marshmallow schemas: what requests may carry and what responses look like (and the docs)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from service.models import TERMINAL, Status

ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# What a number in a query string may look like: int() and float() also read Arabic-Indic or
# fullwidth digits, "1_000" and surrounding spaces, which are not ours to accept.
ASCII_INTEGER = re.compile(r"[0-9]{1,19}")
ASCII_NUMBER = re.compile(r"[0-9]{1,19}(\.[0-9]{1,19})?|\.[0-9]{1,19}")
MAX_LAG = (date.max - date.min).days + 1  # a lag longer than the calendar means one point anyway
MAX_SEED = 2**53 - 1  # the largest integer a JavaScript client reads back exactly
MAX_NAME = 200
MAX_PAGE = 10**9  # keeps the offset within SQLite's INTEGER
OPTIONAL_FIELDS = (
    "name", "duration", "date_start", "date_fin", "lag", "seed", "started_at", "finished_at",
    "attempts",
)  # fmt: skip


class IsoDate(fields.Date):
    """A date written exactly YYYY-MM-DD, and a real one (2020-02-30 is refused)."""

    default_error_messages = {  # noqa: RUF012 (marshmallow merges this class attribute)
        "invalid": "Not a valid date: use YYYY-MM-DD with a real day, e.g. 2024-01-31."
    }

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> date:
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            raise self.make_error("invalid")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None


class StrictInteger(fields.Integer):
    """A JSON integer: true, "7" and 1.5 are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return int(super()._validated(value))


class QueryInteger(fields.Integer):
    """An integer in a query string, written in ASCII digits."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | None:
        if not isinstance(value, str) or not ASCII_INTEGER.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class QueryNumber(fields.Float):
    """A number in a query string, written in ASCII digits with an optional decimal point."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float | None:
        if not isinstance(value, str) or not ASCII_NUMBER.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class FieldNames(fields.Field):
    """A comma-separated list of optional response fields, e.g. `name,duration`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        names = [name.strip() for name in str(value).split(",") if name.strip()]
        unknown = [name for name in names if name not in OPTIONAL_FIELDS]
        if unknown:
            raise ValidationError(
                f"Unknown field {', '.join(unknown)}; choose from {', '.join(OPTIONAL_FIELDS)}."
            )
        return names


class CalculationRequest(Schema):
    date_start = IsoDate(required=True, metadata={"example": "2024-01-01"})
    date_fin = IsoDate(
        required=True, metadata={"example": "2024-12-31", "description": "Included."}
    )
    lag = StrictInteger(
        required=True,
        validate=validate.Range(min=1, max=MAX_LAG),
        metadata={"example": 7, "description": "Days between two rows of the result."},
    )
    name = fields.String(
        validate=validate.Length(min=1, max=MAX_NAME),
        metadata={"description": "Made from the parameters when left out."},
    )
    seed = StrictInteger(
        validate=validate.Range(min=0, max=MAX_SEED),
        metadata={"description": "Makes the run reproducible; drawn at random when left out."},
    )

    @validates_schema
    def check_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "date_start" in data and "date_fin" in data and data["date_fin"] < data["date_start"]:
            raise ValidationError("date_fin must not precede date_start", "date_fin")

    @post_load
    def default_name(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data.setdefault("name", f"{data['date_start']}..{data['date_fin']} every {data['lag']}d")
        return data


class CalculationCreated(Schema):
    id = fields.Integer(required=True)
    status = fields.Enum(Status, by_value=True, required=True)


class ResultRow(Schema):
    date = fields.Date(required=True)
    liquid = fields.Float(required=True)
    oil = fields.Float(required=True)
    water = fields.Float(required=True)
    wct = fields.Float(
        required=True, allow_none=True, metadata={"description": "null where liquid is 0"}
    )


class CalculationOut(Schema):
    id = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    status = fields.Enum(Status, by_value=True, required=True)
    error = fields.String(metadata={"description": "Why the run failed; only on failed runs."})
    name = fields.String()
    duration = fields.Float(
        allow_none=True, metadata={"description": "Seconds the kernel took; null until done."}
    )
    date_start = fields.Date()
    date_fin = fields.Date()
    lag = fields.Integer()
    seed = fields.Integer()
    started_at = fields.AwareDateTime(allow_none=True)
    finished_at = fields.AwareDateTime(allow_none=True)
    attempts = fields.Integer(metadata={"description": "How many times the run was started."})
    result = fields.List(
        fields.Nested(ResultRow),
        allow_none=True,
        required=True,
        metadata={"description": "null until the run is done; rows in date order."},
    )


class CreateHeaders(Schema):
    # Only the headers a schema names reach it (service/parser.py): no others to exclude.
    key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Regexp(
            r"^[\x21-\x7e]{1,255}$", error="Use 1 to 255 printable ASCII characters, no spaces."
        ),
        metadata={
            "description": "Retrying with the same key and body returns the first run (200)."
        },
    )


class CalculationQuery(Schema):
    wait = QueryNumber(
        validate=validate.Range(min=0, max=60, min_inclusive=False),
        metadata={"description": "Seconds (0 < S <= 60) to wait for the run to end."},
    )
    fields_ = FieldNames(
        data_key="fields",
        load_default=(),
        metadata={"description": f"Comma-separated extra fields: {', '.join(OPTIONAL_FIELDS)}."},
    )


class CalculationSummary(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    status = fields.Enum(Status, by_value=True, required=True)


class ListQuery(Schema):
    page = QueryInteger(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = QueryInteger(load_default=10, validate=validate.Range(min=1, max=100))
    order = fields.String(
        load_default="desc",
        validate=validate.OneOf(["asc", "desc"]),
        metadata={"description": "By launch date: desc (newest first) or asc."},
    )
    status = fields.Enum(Status, by_value=True)


class DeleteQuery(Schema):
    status = fields.Enum(
        Status,
        by_value=True,
        validate=validate.OneOf(
            sorted(TERMINAL),
            error="Only ended runs are deleted by filter: done, failed or cancelled.",
        ),
        metadata={"description": "Delete only ended runs of this status."},
    )
    finished_before = fields.AwareDateTime(
        metadata={
            "description": "Delete only runs that ended before this time: ISO 8601 with a"
            " time zone, such as `2026-01-31T00:00:00Z` (a `+` is sent as `%2B`)."
        }
    )

    @validates_schema
    def a_filter_is_given(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError(
                "Give status, finished_before or both: a DELETE without a filter would"
                " delete every ended run.",
                "_schema",
            )


class Deleted(Schema):
    deleted = fields.Integer(required=True, metadata={"description": "How many runs."})


class CalculationPage(Schema):
    items = fields.List(fields.Nested(CalculationSummary), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)
    pages = fields.Integer(required=True)


class Health(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    database = fields.String(required=True, metadata={"example": "ok"})
    consumer = fields.String(required=True, metadata={"example": "ok"})
    queued = fields.Integer(metadata={"description": "Runs waiting."})
    running = fields.Integer(metadata={"description": "Runs computing."})


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"example": "invalid_request"})
    message = fields.String(required=True)
    fields_ = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        data_key="fields",
        metadata={"description": "Per field, what is wrong with it."},
    )


class ErrorOut(Schema):
    error = fields.Nested(ErrorDetail, required=True)
