"""Handlers of /api/v1/calculations: validated input, one database call, a JSON response."""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, json_schema, querystring_schema, response_schema

from service import db
from service.errors import CalculationNotFound, InvalidRequest
from service.keys import CONFIG, CONSUMER, DB
from service.models import Calculation, Status, point_count
from service.schemas import (
    MAX_SEED,
    CalculationCreated,
    CalculationOut,
    CalculationPage,
    CalculationQuery,
    CalculationRequest,
    CalculationSummary,
    ErrorOut,
    ListQuery,
)

ERRORS = {
    400: {"schema": ErrorOut, "description": "The body is not a JSON object."},
    422: {
        "schema": ErrorOut,
        "description": "Some fields are invalid; `fields` says which and why.",
    },
}
NOT_FOUND = {404: {"schema": ErrorOut, "description": "No calculation has this id."}}


@docs(tags=["calculations"], summary="Queue a calculation", responses=ERRORS)
@json_schema(CalculationRequest)
@response_schema(CalculationCreated, 201, description="Queued; `Location` is its URL.")
async def create_calculation(request: web.Request) -> web.Response:
    params = request["json"]
    points = point_count(params["date_start"], params["date_fin"], params["lag"])
    max_points = request.app[CONFIG].max_points
    if points > max_points:
        raise InvalidRequest(
            "some fields are invalid",
            {"lag": [f"The result would have {points} rows; the limit is {max_points}."]},
        )
    params.setdefault("seed", secrets.randbelow(MAX_SEED + 1))
    calc = await db.insert_calculation(request.app[DB], **params)
    request.app[CONSUMER].notify()
    location = str(request.app.router["calculation"].url_for(calc_id=str(calc.id)))
    return web.json_response(
        CalculationCreated().dump(calc), status=201, headers={"Location": location}
    )


@docs(
    tags=["calculations"],
    summary="List calculations by launch date",
    responses={422: ERRORS[422]},
)
@querystring_schema(ListQuery)
@response_schema(CalculationPage, 200)
async def list_calculations(request: web.Request) -> web.Response:
    query = request["querystring"]
    conn, per_page, status = request.app[DB], query["per_page"], query.get("status")
    total = await db.count_calculations(conn, status=status)
    calcs = await db.list_calculations(
        conn,
        limit=per_page,
        offset=(query["page"] - 1) * per_page,
        descending=query["order"] == "desc",
        status=status,
    )
    page = {
        "items": CalculationSummary(many=True).dump(calcs),
        "page": query["page"],
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page),
    }
    return web.json_response(page)


@docs(
    tags=["calculations"],
    summary="One calculation, with its result once done",
    responses={**NOT_FOUND, 422: ERRORS[422]},
)
@querystring_schema(CalculationQuery)
@response_schema(CalculationOut, 200)
async def get_calculation(request: web.Request) -> web.Response:
    calc_id = int(request.match_info["calc_id"])
    calc = await db.get_calculation(request.app[DB], calc_id)
    if calc is None:
        raise CalculationNotFound(f"calculation {calc_id} does not exist")
    return calculation_response(calc, request["querystring"]["fields_"])


def calculation_response(calc: Calculation, extra: tuple[str, ...] | list[str]) -> web.Response:
    """The run as JSON, with its stored result text spliced in as it is, never parsed."""
    shown = ["id", "created_at", "status", *dict.fromkeys(extra)]
    if calc.status is Status.FAILED:
        shown.append("error")
    meta: dict[str, Any] = CalculationOut(only=shown).dump(calc)
    result = calc.result_json if calc.status is Status.DONE else None
    body = json.dumps(meta)[:-1] + ', "result": ' + (result or "null") + "}"
    return web.Response(text=body, content_type="application/json")
