"""The ping-pong pipeline over real HTTP: seeded stops, validation, partners down, the trace."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpRawServer, AiohttpServer

from service.app import create_app
from service.config import Config
from service.db import Database
from tests.conftest import app_client, free_port, wait_until_up

Client = TestClient[Any, Any]
ON_BOTH_BACKENDS = True  # see conftest
HISTORICAL_KICK = {"name": "payload", "d;5Digits": [], "avg": None, "max": None, "min": None}
PARTNER = {"a": "b", "b": "a"}


def replay(
    rngs: dict[str, Random], *, rate: float = 4 / 11, max_hops: int = 100
) -> tuple[int, str, str, dict[str, Any]]:
    """Where a pipeline kicked at A stops: (hop, service, outcome, payload as that hop got it).

    The draws of each hop, as service/pingpong/pipeline.py documents them: refusal first, then
    the hop limit, then A's digit. `rngs` maps each service to the generator its process owns.
    """
    state: dict[str, Any] = {"digits": [], "avg": None, "max": None, "min": None}
    service = "a"
    for hop in range(1, max_hops + 1):
        rng = rngs[service]
        if rng.random() < rate:
            return hop, service, "refused", state
        if hop >= max_hops:
            return hop, service, "max_hops", state
        digits = state["digits"]
        if service == "a":
            state = {**state, "digits": [*digits, rng.randint(0, 100)]}
        else:
            state = {**state, **stats(digits)}
        service = PARTNER[service]
    raise AssertionError("unreachable: the last hop stops the pipeline")


def stats(digits: list[int]) -> dict[str, Any]:
    return {"avg": sum(digits) / len(digits), "max": max(digits), "min": min(digits)}


async def get_json(client: Client | aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def wait_stopped(
    client: Client | aiohttp.ClientSession, url: str, timeout: float = 20.0
) -> dict[str, Any]:
    """The trace once stopped and once every hop has its outcome."""
    async with asyncio.timeout(timeout):
        while True:
            trace: dict[str, Any] = await get_json(client, url)
            hops = trace["hops"]
            if trace["summary"]["status"] == "stopped" and all(h["outcome"] for h in hops):
                return trace
            await asyncio.sleep(0.02)


async def kick(client: Client | aiohttp.ClientSession, url: str, body: Any) -> str:
    async with client.post(url, json=body) as resp:
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
        assert resp.headers["Location"] == answer["url"] == f"/pingpong/traces/{answer['trace_id']}"
        assert (answer["hop"], answer["service"]) == (1, "a")
        location: str = answer["url"]
        return location


@pytest.fixture
def pingpong(config: Config) -> Config:
    """Seeded, and no refusals: tests set what they need."""
    return replace(config, pingpong_seed=1, pingpong_reject_rate=0.0, pingpong_max_hops=100)


async def test_seeded_pipeline_stops_where_the_seed_says(
    aiohttp_client: AiohttpClient, pingpong: Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.pingpong")
    seed = 37
    rng = Random(seed)  # one process: A and B share one generator
    hop, service, outcome, state = replay({"a": rng, "b": rng})
    assert (hop, service, outcome) == (14, "b", "refused")  # a long pipeline, ended by B
    client = await app_client(
        aiohttp_client, pingpong, pingpong_seed=seed, pingpong_reject_rate=4 / 11
    )

    url = await kick(client, "/pingpong/a", HISTORICAL_KICK)
    trace = await wait_stopped(client, url)

    summary = trace["summary"]
    assert (summary["hop"], summary["service"], summary["outcome"]) == (14, "b", "refused")
    assert summary["reason"] == "b refused it at random (rate 0.364)"
    payload = summary["payload"]
    assert {key: payload[key] for key in state} == state
    assert payload["hop"] == 13
    assert payload["sequence"] == [{"hop": n, "service": "ab"[(n - 1) % 2]} for n in range(1, 14)]
    hops = trace["hops"]
    assert [(h["hop"], h["service"]) for h in hops] == [
        (n, "ab"[(n - 1) % 2]) for n in range(1, 15)
    ]
    assert hops[0]["payload"] == HISTORICAL_KICK  # as received, garbled key and all
    assert [h["outcome"] for h in hops] == ["forwarded"] * 13 + ["refused"]
    assert [h["http_status"] for h in hops] == [202] * 13 + [400]
    assert [h["partner_status"] for h in hops] == [202] * 12 + [400, None]
    assert hops[12]["detail"] == "b answered 400, refused"
    trace_id = trace["trace_id"]
    assert f"pingpong trace={trace_id} hop=14 service=b outcome=refused" in caplog.text
    assert f"pingpong trace={trace_id} hop=1 service=a outcome=forwarded" in caplog.text


async def test_hop_limit_ends_the_pipeline_and_b_sets_avg_max_min(
    aiohttp_client: AiohttpClient, pingpong: Config
) -> None:
    client = await app_client(aiohttp_client, pingpong, pingpong_max_hops=7)
    url = await kick(client, "/pingpong/a", {})
    trace = await wait_stopped(client, url)

    summary = trace["summary"]
    assert (summary["hop"], summary["service"], summary["outcome"]) == (7, "a", "max_hops")
    assert summary["reason"] == "the hop limit of 7 is reached"
    rng = Random(1)  # the seed of the `pingpong` config
    _, _, _, state = replay({"a": rng, "b": rng}, rate=0, max_hops=7)
    assert {key: summary["payload"][key] for key in state} == state
    assert len(state["digits"]) == 3
    hops = trace["hops"]
    assert [h["outcome"] for h in hops] == ["forwarded"] * 6 + ["max_hops"]
    for sent, received in itertools.pairwise(hops):
        before, after = sent["payload"].get("digits", []), received["payload"]["digits"]
        if sent["service"] == "a":
            assert after[:-1] == before
            assert 0 <= after[-1] <= 100
        else:  # B: the stats of the digits it got, which A has not changed since
            assert after == before
            assert {k: received["payload"][k] for k in ("avg", "max", "min")} == stats(after)
    assert isinstance(hops[2]["payload"]["avg"], float)


async def test_empty_kick_starts_a_pipeline_and_a_refused_kick_is_still_202(
    aiohttp_client: AiohttpClient, pingpong: Config
) -> None:
    client = await app_client(aiohttp_client, pingpong, pingpong_reject_rate=1.0)
    url = await kick(client, "/pingpong/a", {})
    trace = await wait_stopped(client, url)
    assert trace["summary"] == {
        "status": "stopped",
        "hop": 1,
        "service": "a",
        "outcome": "refused",
        "reason": "a refused it at random (rate 1)",
        "payload": {},
    }
    assert trace["hops"][0]["http_status"] == 400


async def test_a_kick_at_b_starts_there(aiohttp_client: AiohttpClient, pingpong: Config) -> None:
    client = await app_client(aiohttp_client, pingpong, pingpong_max_hops=2)
    async with client.post("/pingpong/b", json={"digits": [1, 2]}) as resp:
        assert resp.status == 202
        url = (await resp.json())["url"]
    trace = await wait_stopped(client, url)
    assert [(h["hop"], h["service"], h["outcome"]) for h in trace["hops"]] == [
        (1, "b", "forwarded"),
        (2, "a", "max_hops"),
    ]
    assert trace["summary"]["payload"]["avg"] == 1.5


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"digits": [1, 101]}, "digits"),
        ({"digits": [1, "2"]}, "digits"),
        ({"digits": "12"}, "digits"),
        ({"avg": "4.5"}, "avg"),
        ({"avg": True}, "avg"),
        ({"max": 1.5}, "max"),
        ({"min": -1}, "min"),
        ({"name": 5}, "name"),
        ({"hop": -1}, "hop"),
        ({"hop": 10**30}, "hop"),
        ({"trace_id": "has space"}, "trace_id"),
        ({"sequence": [{"hop": 1, "service": "c"}]}, "sequence"),
    ],
)
async def test_malformed_payload_gets_400_naming_the_field(
    client: Client, payload: dict[str, Any], field: str
) -> None:
    for service in ("a", "b"):
        async with client.post(f"/pingpong/{service}", json=payload) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["code"] == "invalid_payload"
        assert list(error["fields"]) == [field]
        assert all(isinstance(reason, str) for reason in error["fields"][field])
    # Without a trace id nobody knows which pipeline it belongs to: nothing is recorded.
    assert (await get_json(client, "/pingpong/traces"))["total"] == 0


async def test_item_errors_name_the_item(client: Client) -> None:
    async with client.post("/pingpong/a", json={"digits": [1, 200]}) as resp:
        fields = (await resp.json())["error"]["fields"]
    assert fields == {
        "digits": ["[1]: Must be greater than or equal to 0 and less than or equal to 100."]
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"nope",
        b"",
        b'"x"',
        b"[" * 30000 + b"]" * 30000,
        b'{"x": ' + b"[" * 980 + b"]" * 980 + b"}",
        b'{"avg": NaN}',
        b'{"avg": 1e400}',
        b'{"extra": -Infinity}',
    ],
)
async def test_body_that_is_not_a_json_object_gets_400(client: Client, raw: bytes) -> None:
    async with client.post("/pingpong/a", data=raw) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_request"


async def test_invalid_hop_is_recorded_in_its_trace(client: Client) -> None:
    bad = {"trace_id": "t-1", "hop": 3, "digits": [1, "x"]}
    async with client.post("/pingpong/b", json=bad) as resp:
        assert resp.status == 400
    trace = await wait_stopped(client, "/pingpong/traces/t-1")
    summary = trace["summary"]
    assert (summary["hop"], summary["service"], summary["outcome"]) == (4, "b", "invalid")
    assert summary["reason"] == "invalid payload: digits: [1]: Not a valid integer."
    assert summary["payload"] == bad


async def test_refused_hop_is_400_and_a_replayed_hop_409(
    aiohttp_client: AiohttpClient, pingpong: Config
) -> None:
    client = await app_client(aiohttp_client, pingpong, pingpong_reject_rate=1.0)
    hop = {"trace_id": "t-2", "hop": 1, "digits": [5]}
    async with client.post("/pingpong/b", json=hop) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == {
            "code": "refused",
            "message": "b refused it at random (rate 1)",
        }
    async with client.post("/pingpong/b", json=hop) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "duplicate_hop"
    trace = await wait_stopped(client, "/pingpong/traces/t-2")
    assert [(h["hop"], h["outcome"], h["http_status"]) for h in trace["hops"]] == [
        (2, "refused", 400)
    ]


async def test_partner_down_is_recorded_as_unreachable(
    aiohttp_client: AiohttpClient, pingpong: Config
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    client = await app_client(aiohttp_client, pingpong, pingpong_b_url=nobody)
    trace = await wait_stopped(client, await kick(client, "/pingpong/a", {}))
    summary = trace["summary"]
    assert (summary["hop"], summary["service"]) == (1, "a")
    assert summary["outcome"] == "partner_unreachable"
    assert summary["reason"].startswith(f"b at {nobody}/pingpong/b is unreachable: ")
    assert trace["hops"][0]["partner_status"] is None


async def test_partner_answering_something_else_is_a_partner_error(
    aiohttp_client: AiohttpClient, aiohttp_raw_server: AiohttpRawServer, pingpong: Config
) -> None:
    async def unavailable(request: web.BaseRequest) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    partner = await aiohttp_raw_server(unavailable)
    client = await app_client(aiohttp_client, pingpong, pingpong_b_url=str(partner.make_url("/")))
    trace = await wait_stopped(client, await kick(client, "/pingpong/a", {}))
    hop = trace["hops"][0]
    assert (hop["outcome"], hop["partner_status"]) == ("partner_error", 503)
    # The partner's own words are not ours to show: only its status, and our reason.
    assert hop["detail"] == "b answered 503, an answer not in this service's error shape"
    assert "maintenance" not in json.dumps(trace)


async def test_running_trace_and_shutdown_records_the_forward_in_flight_as_interrupted(
    aiohttp_client: AiohttpClient,
    aiohttp_raw_server: AiohttpRawServer,
    pingpong: Config,
    store: Database,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.BaseRequest) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=202)

    partner = await aiohttp_raw_server(slow)
    client = await app_client(aiohttp_client, pingpong, pingpong_b_url=str(partner.make_url("/")))
    trace_id = (await kick(client, "/pingpong/a", {})).rsplit("/", 1)[1]
    async with asyncio.timeout(10):
        await arrived.wait()
    trace = await get_json(client, f"/pingpong/traces/{trace_id}")
    assert trace["summary"] == {
        "status": "running",
        "hop": None,
        "service": None,
        "outcome": None,
        "reason": None,
        "payload": None,
    }
    assert trace["hops"][0]["outcome"] is None
    assert (await get_json(client, "/pingpong/traces"))["items"][0]["status"] == "running"
    await client.close()  # runs the cleanup contexts: the forward is cancelled
    release.set()
    [hop] = await store.list_hops(trace_id)
    assert (hop.outcome, hop.partner_status) == ("interrupted", None)
    assert hop.detail == "a shut down before b answered"


async def test_list_is_newest_first_and_paginated(
    aiohttp_client: AiohttpClient, pingpong: Config
) -> None:
    client = await app_client(aiohttp_client, pingpong, pingpong_reject_rate=1.0)
    urls = [await kick(client, "/pingpong/a", {}) for _ in range(3)]
    first = await get_json(client, "/pingpong/traces?per_page=2")
    assert [item["url"] for item in first["items"]] == [urls[2], urls[1]]
    assert (first["page"], first["per_page"], first["total"], first["pages"]) == (1, 2, 3, 2)
    assert first["items"][0]["status"] == "stopped"
    assert first["items"][0]["hops"] == 1
    second = await get_json(client, "/pingpong/traces?per_page=2&page=2")
    assert [item["url"] for item in second["items"]] == [urls[0]]
    assert (await get_json(client, "/pingpong/traces?page=3&per_page=2"))["items"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("page=0", "page"),
        ("page=x", "page"),
        ("page=10000000000000000000000", "page"),
    ],
)
async def test_bad_list_query_is_422(client: Client, query: str, field: str) -> None:
    async with client.get(f"/pingpong/traces?{query}") as resp:
        assert resp.status == 422
        error = (await resp.json())["error"]
    assert error["code"] == "invalid_request"
    assert field in error["fields"]


@pytest.mark.parametrize("trace_id", ["unknown", "bad.id", "x" * 65])
async def test_unknown_trace_is_404_json(client: Client, trace_id: str) -> None:
    async with client.get(f"/pingpong/traces/{trace_id}") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_openapi_documents_the_pingpong_endpoints(client: Client) -> None:
    spec = await get_json(client, "/api/docs/openapi.json")
    paths = spec["paths"]
    for service in ("a", "b"):
        post = paths[f"/pingpong/{service}"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/PingPongPayload"}
        assert {"202", "400", "409"} <= set(post["responses"])
    assert "get" in paths["/pingpong/traces/{trace_id}"]
    listing = paths["/pingpong/traces"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"page", "per_page"}
    payload = spec["components"]["schemas"]["PingPongPayload"]["properties"]
    assert {"name", "digits", "avg", "max", "min", "trace_id", "hop", "sequence"} <= set(payload)


async def test_separate_databases_each_show_what_they_saw(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, pingpong: Config, tmp_path: Path
) -> None:
    """Not the documented setup, but the sender's trace still says the pipeline stopped."""
    port_a, port_b = free_port(), free_port()
    config_b = replace(
        pingpong,
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        pingpong_a_url=f"http://127.0.0.1:{port_a}",
        pingpong_reject_rate=1.0,
    )
    config_a = replace(pingpong, pingpong_b_url=f"http://127.0.0.1:{port_b}")
    await aiohttp_server(create_app(config_b), port=port_b)
    client_a = await aiohttp_client(await aiohttp_server(create_app(config_a), port=port_a))
    url = await kick(client_a, "/pingpong/a", {})

    seen_by_a = await wait_stopped(client_a, url)
    assert seen_by_a["summary"]["hop"] == 2
    assert seen_by_a["summary"]["service"] == "b"
    assert seen_by_a["summary"]["reason"] == "b answered 400, refused"
    assert (await get_json(client_a, "/pingpong/traces"))["items"][0]["status"] == "stopped"
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port_b}") as session:
        seen_by_b = await wait_stopped(session, url)
    assert seen_by_b["summary"]["outcome"] == "refused"
    assert [h["hop"] for h in seen_by_b["hops"]] == [2]


async def test_two_processes_on_two_ports_share_one_trace(start_server: Any) -> None:
    seed = 29
    predicted = replay({"a": Random(seed), "b": Random(seed)})  # one generator per process
    assert predicted[:3] == (4, "b", "refused")
    rng = Random(seed)
    assert replay({"a": rng, "b": rng})[:3] != predicted[:3]  # so the wiring shows
    port_a, port_b = free_port(), free_port()
    common = {"PINGPONG_SEED": str(seed), "PINGPONG_REJECT_RATE": str(4 / 11)}
    # Each port is chosen first, so that each process can be told the other's address.
    base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    start_server({**common, "PORT": str(port_a), "PINGPONG_B_URL": base_b}, "a.log")
    start_server({**common, "PORT": str(port_b), "PINGPONG_A_URL": base_a}, "b.log")
    await asyncio.gather(wait_until_up(base_a), wait_until_up(base_b))

    async with aiohttp.ClientSession(base_a) as a, aiohttp.ClientSession(base_b) as b:
        url = await kick(a, "/pingpong/a", HISTORICAL_KICK)
        trace = await wait_stopped(a, url)
        assert await get_json(b, url) == trace
    summary = trace["summary"]
    assert (summary["hop"], summary["service"], summary["outcome"]) == predicted[:3]
    assert {key: summary["payload"][key] for key in predicted[3]} == predicted[3]
    assert [h["service"] for h in trace["hops"]] == ["a", "b", "a", "b"]


async def test_openapi_is_whole_in_every_app(aiohttp_client: AiohttpClient, config: Config) -> None:
    """Building one app's document must not use up what the next app's document needs."""
    for _ in range(2):
        client = await aiohttp_client(create_app(config))
        spec = await get_json(client, "/api/docs/openapi.json")
        assert "PingPongPayload" in spec["components"]["schemas"]


@pytest.mark.parametrize(
    "host", [b"x:notaport", b"127.0.0.1:1", b"evil.example", b"[::1]:9", b"localhost:65535"]
)
async def test_host_header_never_steers_the_forward(
    aiohttp_client: AiohttpClient, pingpong: Config, host: bytes
) -> None:
    """With no partner URL set, "this server" is the address the request reached, whatever
    Host says: the payload goes nowhere a client names."""
    client = await app_client(aiohttp_client, pingpong, pingpong_max_hops=3)
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"POST /pingpong/a HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 202 ")
    trace = await wait_stopped(
        client, (await get_json(client, "/pingpong/traces"))["items"][0]["url"]
    )
    # b and then a, on this very server, answered each forward, up to the hop limit.
    assert [hop["partner_status"] for hop in trace["hops"]] == [202, 202, None]
    assert [hop["service"] for hop in trace["hops"]] == ["a", "b", "a"]
    assert trace["summary"]["outcome"] == "max_hops"


async def test_partner_url_that_is_not_http_stops_the_start(config: Config) -> None:
    runner = web.AppRunner(create_app(replace(config, pingpong_b_url="localhost:8082")))
    try:
        with pytest.raises(ValueError, match="PINGPONG_B_URL must be an http"):
            await runner.setup()
    finally:
        await runner.cleanup()
