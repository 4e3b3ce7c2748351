"""The Python client of the calculations service.

```python
from calculations_client import Client

with Client() as client:                      # CALCULATIONS_URL, CALCULATIONS_TOKEN
    runs = client.map({"date_start": "2024-01-01", "date_fin": "2024-12-31", "lag": lag}
                      for lag in range(1, 201))
    frame = client.result(runs[0].id)
```
"""

from calculations_client.aio import AsyncClient
from calculations_client.errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from calculations_client.models import Run
from calculations_client.protocol import Retry
from calculations_client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "Retry",
    "Run",
    "Unauthorized",
    "Unavailable",
]
__version__ = "1.0.0"
