"""The HTTP contract of /api/v1/calculations, through the real app, database and process pool."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.app import create_app
from service.config import Config
from service.db import Database
from tests.conftest import SMALL_RUN, create, insert_run, wait_for_terminal

Client = TestClient[Any, Any]
ON_BOTH_BACKENDS = True  # see conftest


async def count_rows(client: Client) -> int:
    resp = await client.get("/api/v1/calculations")
    total: int = (await resp.json())["total"]
    return total


async def test_create_answers_201_with_id_status_and_location(client: Client) -> None:
    resp = await client.post("/api/v1/calculations", json=SMALL_RUN)
    assert resp.status == 201
    body = await resp.json()
    assert body == {"id": 1, "status": "queued"}
    assert resp.headers["Location"] == "/api/v1/calculations/1"
    follow = await client.get(resp.headers["Location"])
    assert follow.status == 200


async def test_done_run_serves_result_rows_in_date_order(client: Client) -> None:
    calc_id = await create(client, seed=7)
    body = await wait_for_terminal(client, calc_id)
    assert body["status"] == "done"
    assert list(body) == ["id", "created_at", "status", "result"]
    dates = [row["date"] for row in body["result"]]
    assert dates == ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29"]
    assert set(body["result"][0]) == {"date", "liquid", "oil", "water", "wct"}
    assert body["created_at"].endswith("+00:00")


async def test_result_is_null_until_done_and_runs_go_one_after_another(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await aiohttp_client(create_app(replace(config, kernel_delay=0.3)))
    ids = [await create(client, name=f"run {i}") for i in range(3)]
    query = "?fields=name,duration,started_at,finished_at"
    early = [await (await client.get(f"/api/v1/calculations/{i}{query}")).json() for i in ids]
    # Each kernel sleeps 0.3 s and one runs at a time: the last two cannot have started yet.
    assert [body["status"] for body in early[1:]] == ["queued", "queued"]
    for body in early:
        assert body["result"] is None
        assert body["duration"] is None
    assert early[1]["name"] == "run 1"
    done = [await wait_for_terminal(client, i, query=query) for i in ids]
    assert [body["status"] for body in done] == ["done"] * 3
    assert all(body["duration"] >= 0.3 for body in done)
    # In submission order, and never two at once.
    for before, after in itertools.pairwise(done):
        assert before["finished_at"] <= after["started_at"]


async def test_all_optional_fields_show_the_parameters_and_the_seed_used(client: Client) -> None:
    calc_id = await create(client)
    query = "?fields=name,duration,date_start,date_fin,lag,seed,started_at,finished_at"
    body = await wait_for_terminal(client, calc_id, query=query)
    assert body["date_start"] == "2024-01-01"
    assert body["date_fin"] == "2024-01-31"
    assert body["lag"] == 7
    assert body["name"] == "2024-01-01..2024-01-31 every 7d"
    assert isinstance(body["seed"], int)
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]
    # The seed stored is the seed used: asking for it again reproduces the result.
    again = await create(client, seed=body["seed"])
    assert (await wait_for_terminal(client, again))["result"] == body["result"]


async def test_same_seed_gives_the_same_result(client: Client) -> None:
    first, second = await create(client, seed=123), await create(client, seed=123)
    one = await wait_for_terminal(client, first)
    two = await wait_for_terminal(client, second)
    assert one["result"] == two["result"]


async def test_whole_calendar_is_accepted(client: Client) -> None:
    calc_id = await create(client, date_start="0001-01-01", date_fin="9999-12-31", lag=36500)
    body = await wait_for_terminal(client, calc_id)
    assert body["status"] == "done"
    assert body["result"][0]["date"] == "0001-01-01"
    assert body["result"][-1]["date"] == "9994-05-13"


async def test_response_is_json_a_strict_parser_accepts(client: Client) -> None:
    calc_id = await create(client, date_start="2000-01-01", date_fin="2003-12-31", lag=1)
    await wait_for_terminal(client, calc_id)
    resp = await client.get(f"/api/v1/calculations/{calc_id}")
    assert resp.content_type == "application/json"
    body = json.loads(await resp.text(), parse_constant=pytest.fail)
    assert len(body["result"]) == 1461


BAD_BODIES = [
    ({"date_fin": "2024-01-31", "lag": 7}, "date_start", "Missing data for required field."),
    ({**SMALL_RUN, "extra": 1}, "extra", "Unknown field."),
    ({**SMALL_RUN, "date_start": "2024-1-01"}, "date_start", None),
    ({**SMALL_RUN, "date_start": "2024-01-01T00:00:00"}, "date_start", None),
    ({**SMALL_RUN, "date_start": "20240101"}, "date_start", None),
    ({**SMALL_RUN, "date_start": "2020-02-30"}, "date_start", None),
    ({**SMALL_RUN, "date_start": "0000-01-01"}, "date_start", None),
    ({**SMALL_RUN, "date_start": 20240101}, "date_start", None),
    ({**SMALL_RUN, "date_fin": None}, "date_fin", None),
    ({**SMALL_RUN, "date_start": "2024-02-01"}, "date_fin", "date_fin must not precede date_start"),
    ({**SMALL_RUN, "lag": True}, "lag", "Not a valid integer."),
    ({**SMALL_RUN, "lag": "7"}, "lag", "Not a valid integer."),
    ({**SMALL_RUN, "lag": 1.5}, "lag", "Not a valid integer."),
    ({**SMALL_RUN, "lag": 7.0}, "lag", "Not a valid integer."),
    ({**SMALL_RUN, "lag": 0}, "lag", None),
    ({**SMALL_RUN, "lag": -1}, "lag", None),
    ({**SMALL_RUN, "lag": 10**30}, "lag", None),
    ({**SMALL_RUN, "name": "x" * 201}, "name", None),
    ({**SMALL_RUN, "name": ""}, "name", None),
    ({**SMALL_RUN, "name": 5}, "name", None),
    ({**SMALL_RUN, "seed": -1}, "seed", None),
    ({**SMALL_RUN, "seed": 2**53}, "seed", None),
    ({**SMALL_RUN, "seed": "1"}, "seed", None),
    ({**SMALL_RUN, "date_start": "1000-01-01", "lag": 1}, "lag", "The result would have"),
]


@pytest.mark.parametrize(("body", "field", "reason"), BAD_BODIES)
async def test_invalid_fields_are_refused_with_422_and_nothing_is_written(
    client: Client, body: dict[str, Any], field: str, reason: str | None
) -> None:
    resp = await client.post("/api/v1/calculations", json=body)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == "some fields are invalid"
    assert field in error["fields"]
    if reason is not None:
        assert any(reason in text for text in error["fields"][field])
    assert await count_rows(client) == 0


async def test_max_points_is_the_limit_of_rows(client: Client) -> None:
    # 100,000 rows exactly is allowed (the default MAX_POINTS); one more is not.
    ok = await client.post(
        "/api/v1/calculations",
        json={"date_start": "2000-01-01", "date_fin": "2273-10-15", "lag": 1},
    )
    assert ok.status == 201
    over = await client.post(
        "/api/v1/calculations",
        json={"date_start": "2000-01-01", "date_fin": "2273-10-16", "lag": 1},
    )
    assert over.status == 422
    assert "100001 rows" in (await over.json())["error"]["fields"]["lag"][0]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"\xff\xfe",
        b'{"date_start": ',
        b"[" * 50_000,
    ],
)
async def test_body_that_is_not_a_json_object_gets_400(client: Client, raw: bytes) -> None:
    resp = await client.post(
        "/api/v1/calculations", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("request body must be a JSON object")
    assert await count_rows(client) == 0


async def test_json_body_without_json_content_type_is_accepted(client: Client) -> None:
    # What `curl -d '{...}'` sends: a form content type with a JSON body.
    resp = await client.post(
        "/api/v1/calculations",
        data=json.dumps(SMALL_RUN),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 201


async def test_body_over_64_kib_gets_413_json(client: Client) -> None:
    resp = await client.post("/api/v1/calculations", json={**SMALL_RUN, "name": "x" * 70_000})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await count_rows(client) == 0


@pytest.mark.parametrize(
    "path",
    ["/api/v1/calculations/999", "/api/v1/calculations/abc", "/api/v1/calculations/1" + "0" * 30],
)
async def test_unknown_or_non_numeric_id_is_404_json(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_unknown_id_message_names_it(client: Client) -> None:
    body = await (await client.get("/api/v1/calculations/999")).json()
    assert body == {"error": {"code": "not_found", "message": "calculation 999 does not exist"}}


async def test_wrong_method_is_405_json_with_allow(client: Client) -> None:
    resp = await client.put("/api/v1/calculations")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert {"GET", "POST", "DELETE"} <= {m.strip() for m in resp.headers["Allow"].split(",")}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("fields=bogus", "fields"),
        ("fields=name,result", "fields"),
        ("wat=1", "wat"),
    ],
)
async def test_bad_fields_on_get_are_422(client: Client, query: str, field: str) -> None:
    calc_id = await create(client)
    resp = await client.get(f"/api/v1/calculations/{calc_id}?{query}")
    assert resp.status == 422
    assert field in (await resp.json())["error"]["fields"]


async def test_failing_kernel_fails_that_run_only(client: Client, store: Database) -> None:
    # A row no API request could make (the kernel refuses lag 0), written by another producer.
    day = date(2024, 1, 1)
    calc_id = await insert_run(store, name="bad", date_start=day, date_fin=day, lag=0, seed=1)
    assert calc_id is not None
    good = await create(client)  # also wakes the consumer
    failed = await wait_for_terminal(client, calc_id, query="?fields=duration")
    assert failed["status"] == "failed"
    assert failed["error"] == "ValueError: lag must be at least 1 day, got 0"
    assert failed["result"] is None
    assert (await wait_for_terminal(client, good))["status"] == "done"


async def test_gzip_answer_is_the_same_json_smaller(client: Client) -> None:
    calc_id = await create(client, date_start="2000-01-01", date_fin="2009-12-31", lag=1)
    await wait_for_terminal(client, calc_id)
    for query in ("", "?fields=name,duration,seed"):
        url = f"/api/v1/calculations/{calc_id}{query}"
        plain = await client.get(url, headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["Vary"] == "Accept-Encoding"
        plain_body = await plain.read()
        assert len(plain_body) > 256 * 1024  # large enough to be streamed in pieces
        assert plain.headers["X-Request-ID"]
        zipped = await client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert await zipped.read() == plain_body  # the client decompressed and checked the CRC
        raw = await client.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert len(await raw.read()) <= 0.4 * len(plain_body)
    refused = await client.get(
        f"/api/v1/calculations/{calc_id}", headers={"Accept-Encoding": "gzip;q=0"}
    )
    assert "Content-Encoding" not in refused.headers


async def test_max_queued_holds_exactly_under_concurrent_creates(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await aiohttp_client(create_app(replace(config, kernel_delay=60, max_queued=15)))
    answers = await asyncio.gather(
        *(client.post("/api/v1/calculations", json=SMALL_RUN) for _ in range(60))
    )
    statuses = sorted(resp.status for resp in answers)
    # One may be running already (not queued any more): 15 or 16 are taken, never more.
    assert statuses.count(201) in (15, 16)
    assert set(statuses) == {201, 429}
    queued = await (await client.get("/api/v1/calculations?status=queued")).json()
    every = await (await client.get("/api/v1/calculations")).json()
    assert queued["total"] <= 15
    assert every["total"] == statuses.count(201)
