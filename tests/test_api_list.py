"""Listing runs: pagination, both orders, the status filter, and refusals of bad queries."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import Database
from tests.conftest import create, insert_run, insert_runs, wait_for_terminal

Client = TestClient[Any, Any]
ON_BOTH_BACKENDS = True  # see conftest
DAY = date(2024, 1, 1)


async def listing(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/api/v1/calculations{query}")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_empty_list(client: Client) -> None:
    body = await listing(client)
    assert body == {"items": [], "page": 1, "per_page": 10, "total": 0, "pages": 0}


async def test_items_carry_id_name_launch_date_and_status(client: Client) -> None:
    calc_id = await create(client, name="named")
    body = await listing(client)
    (item,) = body["items"]
    assert set(item) == {"id", "name", "created_at", "status"}
    assert item["id"] == calc_id
    assert item["name"] == "named"
    assert item["created_at"].endswith("+00:00")
    assert item["status"] in ("queued", "running", "done")


async def test_ten_a_page_newest_first_by_default(client: Client, store: Database) -> None:
    ids = await insert_runs(store, 23)
    first = await listing(client)
    assert [item["id"] for item in first["items"]] == ids[::-1][:10]
    assert (first["page"], first["per_page"], first["total"], first["pages"]) == (1, 10, 23, 3)
    last = await listing(client, "?page=3")
    assert [item["id"] for item in last["items"]] == ids[::-1][20:]
    past = await listing(client, "?page=4")
    assert past["items"] == []
    assert past["total"] == 23


async def test_oldest_first_and_per_page(client: Client, store: Database) -> None:
    ids = await insert_runs(store, 7)
    body = await listing(client, "?order=asc&per_page=3&page=2")
    assert [item["id"] for item in body["items"]] == ids[3:6]
    assert body["pages"] == 3
    launched = [item["created_at"] for item in (await listing(client, "?order=asc"))["items"]]
    assert launched == sorted(launched)


async def test_status_filter(client: Client, store: Database) -> None:
    # Two runs the kernel refuses (lag 0, written by another producer) and one good run.
    bad = [
        await insert_run(store, name="bad", date_start=DAY, date_fin=DAY, lag=0, seed=0)
        for _ in range(2)
    ]
    good = await create(client)
    for calc_id in [*bad, good]:
        await wait_for_terminal(client, calc_id)
    failed = await listing(client, "?status=failed")
    assert [item["id"] for item in failed["items"]] == bad[::-1]
    assert failed["total"] == 2
    done = await listing(client, "?status=done&order=asc")
    assert [item["id"] for item in done["items"]] == [good]
    assert (await listing(client, "?status=queued"))["total"] == 0


async def test_per_page_of_100_is_allowed(client: Client, store: Database) -> None:
    await insert_runs(store, 101)
    body = await listing(client, "?per_page=100")
    assert len(body["items"]) == 100
    assert body["pages"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=100000000000000000000", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("order=up", "order"),
        ("order=DESC", "order"),
        ("status=finished", "status"),
        ("sort=name", "sort"),
    ],
)
async def test_bad_query_is_422_naming_the_parameter(
    client: Client, query: str, field: str
) -> None:
    resp = await client.get(f"/api/v1/calculations?{query}")
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request"
    assert list(error["fields"]) == [field]
