"""Handler of /api/v1/calculations/{id}/result.csv: a done run's result as the stored CSV."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import docs

from service.api.calculations import send_parts
from service.errors import CalculationNotFound, ResultNotReady
from service.keys import DB
from service.schemas import ErrorOut

CSV_RESPONSES: dict[int, dict[str, Any]] = {
    200: {
        "description": "The rows of the result with a header line, as a file to download.",
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "date,liquid,oil,water,wct\r\n2024-01-01,97.1,84.2,12.9,0.132852\r\n",
            }
        },
        "headers": {
            "Content-Disposition": {
                "description": 'attachment; filename="calculation-<id>.csv"',
                "schema": {"type": "string"},
            }
        },
    },
    404: {"schema": ErrorOut, "description": "No calculation has this id."},
    409: {
        "schema": ErrorOut,
        "description": "The run has no result (queued, running, failed or cancelled);"
        " the message says its status.",
    },
}


@docs(tags=["calculations"], summary="The result of a done run as CSV", responses=CSV_RESPONSES)
async def get_result_csv(request: web.Request) -> web.StreamResponse:
    calc_id = int(request.match_info["calc_id"])
    csv = await request.app[DB].csv(calc_id)
    if csv is None:
        # Only on refusal: tells an unknown id from a run that has no result.
        calc = await request.app[DB].get_calculation(calc_id)
        if calc is None:
            raise CalculationNotFound(f"calculation {calc_id} does not exist")
        raise ResultNotReady(f"calculation {calc_id} has no result: its status is {calc.status}")
    headers = {"Content-Disposition": f'attachment; filename="calculation-{calc_id}.csv"'}
    return await send_parts(request, list(csv), "text/csv", headers, charset="utf-8")
