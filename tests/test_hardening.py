"""Requests an attacker or a careless client sends: each gets a clear answer and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient, AiohttpRawServer

from service.config import Config
from tests.conftest import SMALL_RUN, app_client, create, database, wait_for_terminal

Client = TestClient[Any, Any]
RUNS = "/api/v1/calculations"


async def raw_exchange(client: Client, request: bytes) -> bytes:
    """Send bytes as they are, and read the answer until the server closes."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def post_raw(path: str, body: bytes, headers: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + headers
        + b"Connection: close\r\n\r\n"
        + body
    )


def body_of(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def total_runs(config: Config) -> int:
    return int(database(config.db_path, "SELECT count(*) FROM calculations")[0][0])


# 1. Strings that cannot be stored: refused with a 422 naming the field, nothing written.
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'"name": "\\ud800"', "name"),
        (b'"name": "ok \\udfff then"', "name"),
        (b'"name": "a\\u0000b"', "name"),
        (b'"name": "\\udc80\\ud800"', "name"),
        (b'"extra": {"deep": ["fine", "\\ud83d"]}', "extra.deep[1]"),
    ],
)
async def test_unstorable_strings_are_refused_by_field(
    client: Client, config: Config, body: bytes, field: str
) -> None:
    raw = b'{"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7, ' + body + b"}"
    answer = await raw_exchange(client, post_raw(RUNS, raw))
    assert answer.startswith(b"HTTP/1.1 422 ")
    error = body_of(answer)["error"]
    assert error["code"] == "invalid_request"
    assert list(error["fields"]) == [field]
    assert total_runs(config) == 0


async def test_a_key_that_cannot_be_stored_is_named_escaped(client: Client) -> None:
    raw = b'{"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7, "\\ud800": 1}'
    error = body_of(await raw_exchange(client, post_raw(RUNS, raw)))["error"]
    assert list(error["fields"]) == ["'\\ud800'"]


async def test_a_paired_surrogate_is_a_real_character_and_is_stored_exactly(client: Client) -> None:
    raw = (
        b'{"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7,'
        b' "name": "\\ud83d\\ude00"}'
    )
    answer = await raw_exchange(client, post_raw(RUNS, raw))
    assert answer.startswith(b"HTTP/1.1 201 ")
    calc_id = body_of(answer)["id"]
    resp = await client.get(f"{RUNS}/{calc_id}?fields=name")
    assert (await resp.json())["name"] == "\U0001f600"


@pytest.mark.parametrize("path", ["/pingpong/a", "/pingpong/b"])
@pytest.mark.parametrize(
    "body", [b'{"name": "\\ud800"}', b'{"trace_id": "t1", "hop": 1, "note": "\\udfff"}']
)
async def test_pingpong_refuses_unstorable_strings_and_stores_nothing(
    client: Client, config: Config, path: str, body: bytes
) -> None:
    answer = await raw_exchange(client, post_raw(path, body))
    assert answer.startswith(b"HTTP/1.1 422 ")
    assert body_of(answer)["error"]["fields"]
    assert database(config.db_path, "SELECT count(*) FROM pingpong_hops") == [(0,)]


# 2. Integers too long for Python to convert: a 400 that says so.
@pytest.mark.parametrize("where", ["lag", "seed", "extra", "nested"])
async def test_integer_literals_past_python_limit_are_400(
    client: Client, config: Config, where: str
) -> None:
    huge = "9" * 5000
    fields = {"lag": "7", "seed": "1"}
    body = '{"date_start": "2024-01-01", "date_fin": "2024-01-31"'
    if where in fields:
        fields[where] = huge
    body += "".join(f', "{name}": {value}' for name, value in fields.items())
    if where == "extra":
        body += f', "extra": {huge}'
    if where == "nested":
        body += f', "extra": [{{"x": -{huge}}}]'
    answer = await raw_exchange(client, post_raw(RUNS, (body + "}").encode()))
    assert answer.startswith(b"HTTP/1.1 400 ")
    error = body_of(answer)["error"]
    assert error["code"] == "bad_request"
    assert "more than 4300 digits" in error["message"]
    assert total_runs(config) == 0


@pytest.mark.parametrize("path", ["/pingpong/a", "/pingpong/b"])
async def test_pingpong_blames_the_long_number_not_nan(client: Client, path: str) -> None:
    answer = await raw_exchange(client, post_raw(path, b'{"hop": ' + b"1" * 4301 + b"}"))
    assert answer.startswith(b"HTTP/1.1 400 ")
    message = body_of(answer)["error"]["message"]
    assert "more than 4300 digits" in message
    assert "NaN" not in message


# 3. Only ASCII digits are an id, or a number in a query string.
@pytest.mark.parametrize("digit", ["\u0661", "\uff11", "\u09e7", "\u0967", "\U0001d7cf", "\u00b9"])
@pytest.mark.parametrize("suffix", ["", "/result.csv", "?wait=1"])
async def test_ids_in_other_digits_are_404(client: Client, digit: str, suffix: str) -> None:
    calc_id = await create(client)
    await wait_for_terminal(client, calc_id)
    resp = await client.get(f"{RUNS}/{digit}{suffix}")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize("digit", ["\u0661", "\uff11"])
async def test_cancel_by_an_id_in_other_digits_is_404_and_cancels_nothing(
    client: Client, config: Config, digit: str
) -> None:
    await create(client)
    resp = await client.post(f"{RUNS}/{digit}/cancel")
    assert resp.status == 404
    assert database(
        config.db_path, "SELECT count(*) FROM calculations WHERE status = 'cancelled'"
    ) == [(0,)]


@pytest.mark.parametrize(
    "query",
    [
        "page=\u0661",
        "per_page=\uff11\uff10",
        "page=1_0",
        "page=%201",
        "per_page=+5",
        "page=1.0",
    ],
)
@pytest.mark.parametrize("path", [RUNS, "/pingpong/traces"])
async def test_query_integers_are_ascii_digits_only(client: Client, path: str, query: str) -> None:
    resp = await client.get(f"{path}?{query}")
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("wait", ["\u0661", "\uff11.5", "1e1", " 1", "nan", "1_0"])
async def test_wait_is_an_ascii_number_only(client: Client, wait: str) -> None:
    calc_id = await create(client)
    resp = await client.get(f"{RUNS}/{calc_id}", params={"wait": wait})
    assert resp.status == 422
    assert "wait" in (await resp.json())["error"]["fields"]


@pytest.mark.parametrize("wait", ["1", "0.5", ".5", "60"])
async def test_wait_in_ascii_is_accepted(client: Client, wait: str) -> None:
    calc_id = await create(client)
    resp = await client.get(f"{RUNS}/{calc_id}", params={"wait": wait})
    assert resp.status == 200


# 10. Cross-site writes are refused; curl and the page itself keep working.
@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "http://x", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
    ],
)
@pytest.mark.parametrize(
    ("path", "body"),
    [(RUNS, SMALL_RUN), (f"{RUNS}/1/cancel", None), ("/pingpong/a", {})],
)
async def test_cross_site_writes_are_refused_with_403(
    client: Client, config: Config, headers: dict[str, str], path: str, body: Any
) -> None:
    await create(client)
    resp = await client.post(path, data=json.dumps(body), headers=headers)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "cross_site"
    [(count, cancelled)] = database(
        config.db_path,
        "SELECT count(*), count(*) FILTER (WHERE status = 'cancelled') FROM calculations",
    )
    assert (count, cancelled) == (1, 0)
    assert database(config.db_path, "SELECT count(*) FROM pingpong_traces") == [(0,)]


async def test_same_origin_and_curl_writes_pass(client: Client) -> None:
    own = f"http://{client.server.host}:{client.server.port}"
    for headers in (
        {},
        {"Origin": own, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ):
        resp = await client.post(RUNS, data=json.dumps(SMALL_RUN), headers=headers)
        assert resp.status == 201, headers


async def test_cross_site_reads_are_not_refused(client: Client) -> None:
    resp = await client.get(RUNS, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 200


# 11. Protective headers on every page and answer.
@pytest.mark.parametrize(
    "path", ["/", "/api/docs", "/api/docs/openapi.json", RUNS, "/health", "/static/app.js"]
)
async def test_every_answer_has_protective_headers(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


async def test_swagger_ui_page_runs_only_scripts_of_this_server(client: Client) -> None:
    resp = await client.get("/api/docs")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    page = await resp.text()
    assert "<script>" not in page  # no inline script for the CSP to block
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert (await client.get(f"/api/docs/assets/{asset}")).status == 200
    assert (await client.get("/static/docs.js")).status == 200


# 12. The served OpenAPI document is valid OpenAPI 3.
async def test_openapi_document_is_valid(client: Client) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert not any("produces" in op for op in operations)
    assert spec["paths"]["/metrics"]["get"]["responses"]


# 8. With a token set, everything that writes needs it; the hops carry it.
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/pingpong/a"), ("POST", "/pingpong/b"), ("GET", "/pingpong/traces")],
)
async def test_pingpong_needs_the_token_when_one_is_set(
    aiohttp_client: AiohttpClient, config: Config, method: str, path: str
) -> None:
    client = await app_client(aiohttp_client, config, api_token="s3cret")
    resp = await client.request(method, path, json={})
    assert resp.status == 401
    assert database(config.db_path, "SELECT count(*) FROM pingpong_traces") == [(0,)]


@pytest.mark.parametrize("path", ["/health", "/", "/api/docs", "/api/docs/openapi.json"])
async def test_health_page_and_docs_stay_open_with_a_token(
    aiohttp_client: AiohttpClient, config: Config, path: str
) -> None:
    client = await app_client(aiohttp_client, config, api_token="s3cret")
    assert (await client.get(path)).status == 200


async def test_with_a_token_the_hops_between_a_and_b_carry_it(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await app_client(
        aiohttp_client, config, api_token="s3cret", pingpong_reject_rate=0.0, pingpong_max_hops=4
    )
    auth = {"Authorization": "Bearer s3cret"}
    resp = await client.post("/pingpong/a", json={}, headers=auth)
    assert resp.status == 202
    url = (await resp.json())["url"]
    async with asyncio.timeout(20):
        while True:
            trace = await (await client.get(url, headers=auth)).json()
            if trace["summary"]["status"] == "stopped":
                break
            await asyncio.sleep(0.02)
    assert trace["summary"]["outcome"] == "max_hops"
    assert [hop["partner_status"] for hop in trace["hops"][:3]] == [202, 202, 202]


# 9. Traces are bounded.
@pytest.mark.parametrize("hop", [100, 101, 5000, 10**9])
@pytest.mark.parametrize("path", ["/pingpong/a", "/pingpong/b"])
async def test_a_hop_past_the_limit_is_refused_and_stores_nothing(
    client: Client, config: Config, path: str, hop: int
) -> None:
    resp = await client.post(path, json={"trace_id": "t1", "hop": hop, "junk": "x" * 60_000})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_payload"
    assert "past the hop limit of 100" in error["fields"]["hop"][0]
    assert database(config.db_path, "SELECT count(*) FROM pingpong_hops") == [(0,)]


async def test_an_invalid_payload_past_the_limit_stores_nothing(
    client: Client, config: Config
) -> None:
    resp = await client.post("/pingpong/b", json={"trace_id": "t1", "hop": 500, "digits": "no"})
    assert resp.status == 400
    assert database(config.db_path, "SELECT count(*) FROM pingpong_hops") == [(0,)]


@pytest.mark.parametrize("size", [2_000, 30_000, 60_000])
async def test_an_invalid_payload_is_stored_only_as_a_bounded_excerpt(
    client: Client, config: Config, size: int
) -> None:
    body = {"trace_id": "t2", "hop": 1, "digits": "not a list", "junk": "y" * size}
    resp = await client.post("/pingpong/b", json=body)
    assert resp.status == 400
    [(stored,)] = database(config.db_path, "SELECT payload FROM pingpong_hops")
    assert len(stored) < 1200
    trace = await (await client.get("/pingpong/traces/t2")).json()
    payload = trace["hops"][0]["payload"]
    assert payload["length"] == len(json.dumps(body))
    assert payload["excerpt"].startswith('{"trace_id": "t2"')


async def test_a_small_invalid_payload_is_stored_whole(client: Client) -> None:
    body = {"trace_id": "t3", "hop": 1, "digits": "not a list"}
    assert (await client.post("/pingpong/b", json=body)).status == 400
    trace = await (await client.get("/pingpong/traces/t3")).json()
    assert trace["hops"][0]["payload"] == body


@pytest.fixture
async def silent_partner(aiohttp_raw_server: AiohttpRawServer) -> AsyncIterator[str]:
    """The base URL of a partner that never answers, until the test ends."""
    release = asyncio.Event()

    async def silent(request: Any) -> Any:
        await release.wait()
        raise ConnectionResetError

    partner = await aiohttp_raw_server(silent)
    yield str(partner.make_url("/"))
    release.set()


async def test_pipelines_in_flight_are_limited_with_429(
    aiohttp_client: AiohttpClient, config: Config, silent_partner: str
) -> None:
    """A partner that never answers holds every forward: past the limit, kicks get a 429 with
    Retry-After and store nothing."""
    client = await app_client(
        aiohttp_client,
        config,
        pingpong_b_url=silent_partner,
        pingpong_reject_rate=0.0,
        pingpong_max_in_flight=3,
    )
    for _ in range(3):
        assert (await client.post("/pingpong/a", json={})).status == 202
    for _ in range(3):
        resp = await client.post("/pingpong/a", json={})
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "pipelines_full"
    assert database(config.db_path, "SELECT count(*) FROM pingpong_traces") == [(3,)]


async def test_a_dead_partner_does_not_hold_up_another_pipeline(
    aiohttp_client: AiohttpClient, config: Config, silent_partner: str
) -> None:
    """A hundred forwards stuck on one partner leave the connection pool free for others."""
    stuck = await app_client(
        aiohttp_client,
        config,
        pingpong_b_url=silent_partner,
        pingpong_reject_rate=0.0,
        pingpong_max_in_flight=200,
    )
    for _ in range(110):
        assert (await stuck.post("/pingpong/a", json={})).status == 202
    # The same app's A also plays B for a kick sent to /pingpong/b: its forward goes to A on
    # this server, past the hundred that wait on the dead partner.
    resp = await stuck.post("/pingpong/b", json={})
    url = (await resp.json())["url"]
    async with asyncio.timeout(5):
        while True:
            trace = await (await stuck.get(url)).json()
            if trace["hops"][0]["outcome"] is not None:
                break
            await asyncio.sleep(0.02)
    assert trace["hops"][0]["partner_status"] == 202
