"""Errors of the ping-pong endpoints, in the API's one JSON shape (see service/errors.py).

ApiError
├── InvalidPayload  400  the payload fails the schema; `fields` says which and why
├── Refused         400  a valid payload refused at random
├── TraceNotFound   404
├── DuplicateHop    409  this trace already has a hop with this number
└── PipelinesFull   429  PINGPONG_MAX_IN_FLIGHT forwards are under way; Retry-After says when
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from service.errors import ApiError


class InvalidPayload(ApiError):
    status = 400
    code = "invalid_payload"


class Refused(ApiError):
    status = 400
    code = "refused"


class TraceNotFound(ApiError):
    status = 404
    code = "not_found"


class DuplicateHop(ApiError):
    status = 409
    code = "duplicate_hop"


class PipelinesFull(ApiError):
    status = 429
    code = "pipelines_full"
    # A forward ends within FORWARD_TIMEOUT (10 s) at the most; most end in milliseconds.
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


def field_reasons(messages: Mapping[str, Any]) -> dict[str, list[str]]:
    """Marshmallow's messages as one flat list of reasons per top-level field.

    Items of a list field are named by their index: `{"digits": ["[1]: Must be ..."]}`.
    """
    return {str(name): _reasons(nested, "") for name, nested in messages.items()}


def _reasons(messages: Any, path: str) -> list[str]:
    if isinstance(messages, Mapping):
        return [
            reason
            for key, nested in messages.items()
            for reason in _reasons(
                nested, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
            )
        ]
    if isinstance(messages, list):
        return [reason for message in messages for reason in _reasons(message, path)]
    return [f"{path.removeprefix('.')}: {messages}" if path else str(messages)]
