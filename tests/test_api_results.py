"""GET /api/v1/calculations/{id}/result.csv: a done run's stored CSV, or a JSON refusal."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from typing import Any

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.app import create_app
from service.config import Config
from service.db import Database
from tests.conftest import claim_run, create, csv_records, insert_run, wait_for_terminal

Client = TestClient[Any, Any]
ON_BOTH_BACKENDS = True  # see conftest


async def test_csv_of_a_done_run_has_the_rows_and_values_of_its_json(client: Client) -> None:
    calc_id = await create(client, date_start="2024-01-01", date_fin="2024-03-01", lag=5, seed=7)
    body = await wait_for_terminal(client, calc_id)
    assert body["status"] == "done"

    resp = await client.get(f"/api/v1/calculations/{calc_id}/result.csv")

    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        resp.headers["Content-Disposition"] == f'attachment; filename="calculation-{calc_id}.csv"'
    )
    text = await resp.text()
    assert text.splitlines()[0] == "date,liquid,oil,water,wct"
    assert len(body["result"]) == 13
    assert csv_records(text) == body["result"]


async def test_unknown_run_is_a_json_404(client: Client) -> None:
    resp = await client.get("/api/v1/calculations/999/result.csv")

    assert resp.status == 404
    assert await resp.json() == {
        "error": {"code": "not_found", "message": "calculation 999 does not exist"}
    }


async def test_non_numeric_id_is_not_found(client: Client) -> None:
    resp = await client.get("/api/v1/calculations/abc/result.csv")

    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_run_still_going_has_no_result_yet(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    # A long kernel keeps the run queued or running; no grace at shutdown ends it at teardown.
    slow = dataclasses.replace(config, kernel_delay=60.0, shutdown_grace=0.0)
    client = await aiohttp_client(create_app(slow))
    calc_id = await create(client)

    resp = await client.get(f"/api/v1/calculations/{calc_id}/result.csv")

    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "no_result"
    assert re.fullmatch(
        rf"calculation {calc_id} has no result: its status is (queued|running)", error["message"]
    )


async def test_failed_and_cancelled_runs_have_no_result(
    aiohttp_client: AiohttpClient, config: Config, store: Database
) -> None:
    params = {"date_start": date(2024, 1, 1), "date_fin": date(2024, 1, 31), "lag": 7, "seed": 1}
    failed = await insert_run(store, name="fails", **params)
    claimed = await claim_run(store)
    assert failed is not None
    assert claimed is not None
    assert await store.mark_failed(claimed, "ValueError: boom", 0.1)
    cancelled = await insert_run(store, name="cancelled", **params)
    assert cancelled is not None
    assert await store.cancel(cancelled) is not None
    client = await aiohttp_client(create_app(config))

    for calc_id, status in ((failed, "failed"), (cancelled, "cancelled")):
        resp = await client.get(f"/api/v1/calculations/{calc_id}/result.csv")
        assert resp.status == 409
        assert await resp.json() == {
            "error": {
                "code": "no_result",
                "message": f"calculation {calc_id} has no result: its status is {status}",
            }
        }


async def test_csv_endpoint_is_in_the_openapi_document(client: Client) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()

    operation = spec["paths"]["/api/v1/calculations/{calc_id}/result.csv"]["get"]
    assert set(operation["responses"]) >= {"200", "404", "409"}
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert operation["responses"]["409"]["content"]["application/json"]["schema"]
