"""Operating the service: cancel, retry-safe create, limits, concurrency, health, metrics."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from service.config import Config
from tests.conftest import (
    SMALL_RUN,
    app_client,
    create,
    none_ahead_of_an_older_one,
    wait_for_terminal,
)

Client = TestClient[Any, Any]
ON_BOTH_BACKENDS = True  # see conftest


async def status_of(client: Client, calc_id: int) -> str:
    body = await (await client.get(f"/api/v1/calculations/{calc_id}")).json()
    status: str = body["status"]
    return status


async def wait_for_status(client: Client, calc_id: int, status: str) -> None:
    async with asyncio.timeout(30):
        while await status_of(client, calc_id) != status:
            await asyncio.sleep(0.02)


async def metrics_showing(client: Client, line: str) -> str:
    """The metrics text once it shows `line`.

    On PostgreSQL the kernel process commits a result itself, so a reader can
    see a run done a moment before the server hears back and counts it.
    """
    async with asyncio.timeout(10):
        while True:
            resp = await client.get("/metrics")
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
            if line in text:
                return text
            await asyncio.sleep(0.01)


async def test_cancel_a_queued_run_it_never_starts(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=0.5)
    first, second = await create(client), await create(client)
    resp = await client.post(f"/api/v1/calculations/{second}/cancel")
    assert resp.status == 200
    body = await resp.json()
    assert (body["id"], body["status"], body["result"]) == (second, "cancelled", None)
    assert (await wait_for_terminal(client, first))["status"] == "done"
    after = await wait_for_terminal(client, second, query="?fields=started_at")
    assert after["status"] == "cancelled"
    assert after["started_at"] is None


async def test_cancel_a_running_run_ends_its_kernel_process(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=60)
    calc_id = await create(client)
    await wait_for_status(client, calc_id, "running")
    kernels = multiprocessing.active_children()
    assert len(kernels) == 1
    resp = await client.post(f"/api/v1/calculations/{calc_id}/cancel")
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    async with asyncio.timeout(10):
        while kernels[0].is_alive():
            await asyncio.sleep(0.02)
    # A fresh process takes its place, and the queue goes on.
    following = await create(client)
    await wait_for_status(client, following, "running")
    fresh = [p for p in multiprocessing.active_children() if p.pid != kernels[0].pid]
    assert fresh
    assert await status_of(client, calc_id) == "cancelled"


async def test_cancel_an_ended_run_is_409_and_unknown_is_404(client: Client) -> None:
    calc_id = await create(client)
    await wait_for_terminal(client, calc_id)
    resp = await client.post(f"/api/v1/calculations/{calc_id}/cancel")
    assert resp.status == 409
    assert await resp.json() == {
        "error": {"code": "conflict", "message": f"calculation {calc_id} is already done"}
    }
    assert (await client.post("/api/v1/calculations/999/cancel")).status == 404


async def test_cancelled_is_a_status_filter(aiohttp_client: AiohttpClient, config: Config) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=60)
    await create(client)  # computes for a minute, so that the next run stays queued
    queued = await create(client)
    cancelled = await client.post(f"/api/v1/calculations/{queued}/cancel")
    assert cancelled.status == 200
    resp = await client.get("/api/v1/calculations?status=cancelled")
    assert resp.status == 200
    page = await resp.json()
    assert [item["id"] for item in page["items"]] == [queued]
    assert page["total"] == 1


async def test_same_idempotency_key_and_body_gives_the_same_run(client: Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/api/v1/calculations", json=SMALL_RUN, headers=headers)
    assert first.status == 201
    again = await client.post(
        "/api/v1/calculations", json=dict(reversed(SMALL_RUN.items())), headers=headers
    )
    assert again.status == 200
    assert (await again.json())["id"] == (await first.json())["id"]
    assert again.headers["Location"] == first.headers["Location"]
    total = (await (await client.get("/api/v1/calculations")).json())["total"]
    assert total == 1


async def test_same_idempotency_key_with_another_body_is_409(client: Client) -> None:
    headers = {"Idempotency-Key": "k1"}
    await client.post("/api/v1/calculations", json=SMALL_RUN, headers=headers)
    other = await client.post("/api/v1/calculations", json={**SMALL_RUN, "lag": 3}, headers=headers)
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "conflict"
    total = (await (await client.get("/api/v1/calculations")).json())["total"]
    assert total == 1


async def test_concurrent_creates_with_one_key_make_one_run(client: Client) -> None:
    headers = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/calculations", json=SMALL_RUN, headers=headers) for _ in range(8))
    )
    assert sorted(r.status for r in responses) == [200] * 7 + [201]
    assert len({(await r.json())["id"] for r in responses}) == 1


async def test_bad_idempotency_key_is_422(client: Client) -> None:
    resp = await client.post(
        "/api/v1/calculations", json=SMALL_RUN, headers={"Idempotency-Key": "x" * 256}
    )
    assert resp.status == 422
    assert "Idempotency-Key" in (await resp.json())["error"]["fields"]


async def test_full_queue_answers_429_with_retry_after(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=60, max_queued=2)
    running = await create(client)
    await wait_for_status(client, running, "running")
    await create(client)
    await create(client)
    resp = await client.post("/api/v1/calculations", json=SMALL_RUN)
    assert resp.status == 429
    assert resp.headers["Retry-After"].isdigit()
    assert (await resp.json())["error"]["code"] == "queue_full"
    assert (await (await client.get("/api/v1/calculations")).json())["total"] == 3


async def test_time_limit_fails_the_run_and_the_next_starts(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=30, kernel_timeout=0.5)
    first, second = await create(client), await create(client)
    query = "?fields=started_at,finished_at"
    one = await wait_for_terminal(client, first, query=query)
    two = await wait_for_terminal(client, second, query=query)
    assert one["status"] == two["status"] == "failed"
    assert one["error"] == "stopped after the time limit of 0.5 s"
    assert two["started_at"] >= one["finished_at"]


async def test_two_workers_compute_two_runs_at_once(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, workers=2, kernel_delay=1.0)
    ids = [await create(client) for _ in range(2)]
    query = "?fields=started_at,finished_at"
    one, two = [await wait_for_terminal(client, i, query=query) for i in ids]
    assert one["started_at"] <= two["started_at"] < one["finished_at"]


async def test_two_workers_claim_each_of_50_runs_once_in_order(
    aiohttp_client: AiohttpClient, config: Config, backend: str
) -> None:
    client = await app_client(aiohttp_client, config, workers=2)
    ids = [await create(client, seed=i) for i in range(50)]
    query = "?fields=started_at,finished_at,attempts"
    bodies = [await wait_for_terminal(client, i, query=query) for i in ids]
    assert [(b["status"], b["attempts"]) for b in bodies] == [("done", 1)] * 50
    assert none_ahead_of_an_older_one(bodies)
    if backend == "sqlite":  # one claim at a time, its clock read under the write lock
        starts = [b["started_at"] for b in bodies]
        assert starts == sorted(starts)
    await metrics_showing(client, 'calculations_finished_total{status="done"} 50.0')


async def test_wait_answers_when_the_run_ends(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=0.3, poll_interval=30)
    calc_id = await create(client)
    resp = await client.get(f"/api/v1/calculations/{calc_id}?wait=20")
    body = await resp.json()
    assert body["status"] == "done"
    assert len(body["result"]) == 5


async def test_wait_gives_up_after_its_time(aiohttp_client: AiohttpClient, config: Config) -> None:
    client = await app_client(aiohttp_client, config, kernel_delay=60)
    calc_id = await create(client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = await (await client.get(f"/api/v1/calculations/{calc_id}?wait=0.2")).json()
    # It waited its time, then answered with the run as it was (60 s from its end).
    assert 0.2 <= loop.time() - started < 30
    assert body["status"] in ("queued", "running")
    assert body["result"] is None


@pytest.mark.parametrize("wait", ["0", "-1", "61", "soon"])
async def test_bad_wait_is_422(client: Client, wait: str) -> None:
    resp = await client.get(f"/api/v1/calculations/1?wait={wait}")
    assert resp.status == 422
    assert "wait" in (await resp.json())["error"]["fields"]


async def test_health_reports_database_consumer_and_queue(client: Client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {
        "status": "ok",
        "database": "ok",
        "consumer": "ok",
        "queued": 0,
        "running": 0,
    }


async def test_metrics_change_as_runs_go_through(client: Client) -> None:
    before = await (await client.get("/metrics")).text()
    assert "calculations_created_total 0.0" in before
    calc_id = await create(client)
    await wait_for_terminal(client, calc_id)
    after = await metrics_showing(client, 'calculations_finished_total{status="done"} 1.0')
    assert "calculations_created_total 1.0" in after
    assert "calculation_kernel_seconds_count 1.0" in after
    assert "calculations_queued 0.0" in after
    route = 'method="POST",route="/api/v1/calculations",status="201"'
    assert f"http_requests_total{{{route}}} 1.0" in after
    assert 'http_request_seconds_count{method="GET",route="/api/v1/calculations/{calc_id}"' in after


async def test_request_id_is_returned_and_made_when_missing(client: Client) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await client.get("/health")
    assert len(made.headers["X-Request-ID"]) == 32
    again = await client.get("/health")
    assert again.headers["X-Request-ID"] != made.headers["X-Request-ID"]
    unsafe = await client.get("/health", headers={"X-Request-ID": "a b\tc"})
    assert unsafe.headers["X-Request-ID"] != "a b\tc"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "bearer", "Basic c2VjcmV0", "secret"])
async def test_api_token_is_required_when_set(
    aiohttp_client: AiohttpClient, config: Config, header: str | None
) -> None:
    client = await app_client(aiohttp_client, config, api_token="secret")
    headers = {} if header is None else {"Authorization": header}
    created = await client.post("/api/v1/calculations", json=SMALL_RUN, headers=headers)
    assert created.status == 401
    assert (await created.json())["error"]["code"] == "unauthorized"
    assert created.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/metrics", headers=headers)).status == 401
    assert (await client.get("/api/v1/calculations", headers=headers)).status == 401
    assert (await client.get("/health")).status == 200
    ok = await client.get("/api/v1/calculations", headers={"Authorization": "Bearer secret"})
    assert (await ok.json())["total"] == 0
