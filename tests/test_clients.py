"""Clients that leave, stall or send bytes HTTP does not allow, against `python -m service`:
each ends quietly and in bounded time, and none is logged as a server error."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import json_log_lines, wait_until_up

LARGE_RUN = {"date_start": "1900-01-01", "date_fin": "2150-01-01", "lag": 1}


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def access_lines(log: Path, path: str) -> list[dict[str, Any]]:
    return [
        line
        for line in json_log_lines(log)
        if line["logger"] == "service.access" and line.get("path") == path
    ]


def assert_no_server_error(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text
    lines = json_log_lines(log)
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert not [line for line in lines if line.get("status", 0) >= 500]


async def wait_for_line(log: Path, path: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while not access_lines(log, path):
            await asyncio.sleep(0.05)
    return access_lines(log, path)[0]


async def post_json(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with session.post(url, json=body) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def send_and_leave(base: str, request: bytes, read: int = 0) -> None:
    reader, writer = await asyncio.open_connection(*address(base))
    writer.write(request)
    await writer.drain()
    if read:
        await reader.read(read)
    else:
        await asyncio.sleep(0.3)
    writer.close()


async def serve_large_result(start_server: Any, **env: str) -> tuple[str, int, int]:
    """A server with one done 91,000-row run: its address, the run's id, its answer's size."""
    _, base = start_server({"LOG_FORMAT": "json", "KERNEL_DELAY": "0", **env})
    await wait_until_up(base)
    async with aiohttp.ClientSession(base) as session:
        large = (await post_json(session, "/api/v1/calculations", LARGE_RUN))["id"]
        # The size of the plain answer, as a client that asks for no gzip gets it.
        plain = {"Accept-Encoding": "identity"}
        async with session.get(f"/api/v1/calculations/{large}?wait=60", headers=plain) as resp:
            assert (await resp.json())["status"] == "done"
            return base, large, int(resp.headers["Content-Length"])


async def test_clients_that_leave_end_quietly(start_server: Any, tmp_path: Path) -> None:
    base, large, _ = await serve_large_result(start_server)
    log = tmp_path / "server.log"

    # Downloads cut short, of the JSON, its gzip form and the CSV.
    for path, extra in [
        (f"/api/v1/calculations/{large}", b""),
        (f"/api/v1/calculations/{large}", b"Accept-Encoding: gzip\r\n"),
        (f"/api/v1/calculations/{large}/result.csv", b""),
    ]:
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"
        await send_and_leave(base, head, read=100)
    # Uploads cut short: a head that promises more body than comes.
    for sent in (b"", b'{"date_start": ', b"{" * 500):
        head = b"POST /api/v1/calculations HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
        await send_and_leave(base, head + sent)
    async with asyncio.timeout(10):
        while (
            len(
                cut_short := [
                    line
                    for line in access_lines(log, "/api/v1/calculations")
                    if line["status"] == 499
                ]
            )
            < 3
        ):
            await asyncio.sleep(0.05)
    assert [line["method"] for line in cut_short] == ["POST"] * 3
    downloads = access_lines(log, f"/api/v1/calculations/{large}") + access_lines(
        log, f"/api/v1/calculations/{large}/result.csv"
    )
    assert len(downloads) == 4  # the whole one first, then the three cut short
    assert_no_server_error(log)


async def test_a_wait_whose_client_left_stops_within_a_second(
    start_server: Any, tmp_path: Path
) -> None:
    _, base = start_server({"LOG_FORMAT": "json", "KERNEL_DELAY": "60", "SHUTDOWN_GRACE": "0.5"})
    await wait_until_up(base)
    async with aiohttp.ClientSession(base) as session:
        calc_id = (await post_json(session, "/api/v1/calculations", LARGE_RUN))["id"]
    path = f"/api/v1/calculations/{calc_id}"
    head = f"GET {path}?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    left = time.monotonic()
    await send_and_leave(base, head)
    line = await wait_for_line(tmp_path / "server.log", path, timeout=5)
    assert time.monotonic() - left < 3
    assert line["status"] == 499
    assert_no_server_error(tmp_path / "server.log")


MALFORMED = [
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Evil: a\x01b\r\n\r\n",
    b"POST /api/v1/calculations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /api/v1/calculations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
]


async def test_malformed_http_is_400_and_one_quiet_line(start_server: Any, tmp_path: Path) -> None:
    _, base = start_server({"LOG_FORMAT": "json"})
    await wait_until_up(base)
    log = tmp_path / "server.log"
    before = len(log.read_text().splitlines())
    for raw in MALFORMED:
        reader, writer = await asyncio.open_connection(*address(base))
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status_line = answer.split(b"\r\n")[0]
        assert status_line.startswith(b"HTTP/1."), raw[:60]
        assert b" 400 " in status_line, raw[:60]
    await asyncio.sleep(0.3)
    new = log.read_text().splitlines()[before:]
    assert "Traceback" not in "\n".join(new)
    assert len(new) <= len(MALFORMED)
    lines = [json.loads(line) for line in new]
    assert all(line["level"] == "INFO" for line in lines)
    assert all(
        "malformed request from 127.0.0.1 refused with 400" in line["message"] for line in lines
    )


def connect(base: str, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(address(base))
    return sock


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """Seconds until the server closed this connection, and what it answered meanwhile, while
    `trickle` is sent a byte at a time, one every 0.2 s."""
    started, answer, sent = time.monotonic(), b"", 0
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            data = b""
        if not data:
            return time.monotonic() - started, answer
        answer += data
    raise AssertionError(f"still open after {seconds} s")


async def test_slow_and_silent_clients_are_cut_off(start_server: Any, tmp_path: Path) -> None:
    base, large, size = await serve_large_result(start_server, CLIENT_TIMEOUT="1")

    def silent() -> float:
        with connect(base) as sock:
            return closed_within(sock, 10)[0]

    def head() -> float:
        with connect(base) as sock:
            trickle = b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100
            taken, answer = closed_within(sock, 10, trickle)
            assert answer == b""
            return taken

    def body() -> float:
        with connect(base) as sock:
            sock.sendall(
                b"POST /api/v1/calculations HTTP/1.1\r\nHost: x\r\nContent-Length: 70\r\n\r\n"
            )
            trickle = b'{"date_start": "2024-01-01", ' + b" " * 40
            taken, answer = closed_within(sock, 10, trickle)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b'"request_timeout"' in answer
            return taken

    def idle() -> float:  # kept alive after an answer, then silent
        with connect(base) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            taken, answer = closed_within(sock, 10)
            assert answer.startswith(b"HTTP/1.1 200 ")
            return taken

    def reader() -> int:
        with connect(base, receive_buffer=4096) as sock:
            sock.sendall(f"GET /api/v1/calculations/{large} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(4)  # reads nothing meanwhile
            received = 0
            sock.settimeout(5)
            try:
                while chunk := sock.recv(65536):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            return received

    def all_at_once() -> dict[str, float]:
        """Each on its own connection: the server cuts each off by its own clock."""
        kinds = {"silent": silent, "head": head, "body": body, "idle": idle}
        with ThreadPoolExecutor(len(kinds) + 1) as pool:
            taking = {name: pool.submit(scenario) for name, scenario in kinds.items()}
            reading = pool.submit(reader)
            assert reading.result() < size
            return {name: future.result() for name, future in taking.items()}

    seconds = await asyncio.to_thread(all_at_once)
    assert all(value < 5 for value in seconds.values()), seconds
    log = tmp_path / "server.log"
    assert any("read none of" in line["message"] for line in json_log_lines(log))
    assert_no_server_error(log)
