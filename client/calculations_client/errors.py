"""What the client raises: one class per case a caller acts on, all read from the JSON error.

```
ApiError              .status .code .message .fields
├── InvalidRequest    400, 422: the request is wrong; .fields says which field and why
├── Unauthorized      401, 403: no token, a wrong one, or a cross-site request
├── NotFound          404: no run has this id
├── Conflict          409: the run has ended (cancel), has no result, or the key was reused
└── Unavailable       429, 503, 507 or no connection, once the retries are spent
```
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """The service refused a request, or could not be reached (`status` is None then)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        fields: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields: dict[str, list[str]] = dict(fields or {})


class InvalidRequest(ApiError):
    def __str__(self) -> str:
        named = "; ".join(f"{name}: {' '.join(why)}" for name, why in self.fields.items())
        return f"{super().__str__()}" + (f" ({named})" if named else "")


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Unavailable(ApiError):
    pass


BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    422: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    429: Unavailable,
    503: Unavailable,
    507: Unavailable,
}


def error_of(status: int, body: bytes) -> ApiError:
    """The typed error for an answer of `status` with this body, JSON or not."""
    detail: Any = None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        detail = json.loads(body)["error"]
    if not isinstance(detail, dict):
        text = body[:200].decode("utf-8", "replace").strip()
        detail = {"code": f"http_{status}", "message": text or "no error body"}
    kind = BY_STATUS.get(status, ApiError)
    fields = detail.get("fields")
    return kind(
        status,
        str(detail.get("code", f"http_{status}")),
        str(detail.get("message", "")),
        fields if isinstance(fields, dict) else None,
    )
