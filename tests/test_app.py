"""The service as people run it: `python -m service`, settings, restarts and documentation."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.config import Config
from tests.conftest import ROOT, SMALL_RUN, free_port, wait_until_up

Client = TestClient[Any, Any]


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def wait_for_status(
    session: aiohttp.ClientSession, url: str, statuses: set[str]
) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            body = await get_json(session, url)
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.02)


async def test_server_process_serves_the_api(start_server: Any) -> None:
    proc, base = start_server({})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/v1/calculations", json=SMALL_RUN) as resp:
            assert resp.status == 201
            location = resp.headers["Location"]
        body = await wait_for_status(session, base + location, {"done"})
        assert len(body["result"]) == 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


async def test_run_killed_mid_computation_completes_after_restart(
    start_server: Any, tmp_path: Path
) -> None:
    proc, base = start_server({"KERNEL_DELAY": "30"})
    await wait_until_up(base)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/v1/calculations", json=SMALL_RUN) as resp:
            location = resp.headers["Location"]
        await wait_for_status(session, base + location, {"running"})
        proc.kill()
        proc.wait()
        _, base = start_server({"KERNEL_DELAY": "0"})
        await wait_until_up(base)
        body = await wait_for_status(session, base + location + "?fields=duration", {"done"})
        assert len(body["result"]) == 5
    assert "calculation 1 queued again" in (tmp_path / "server.log").read_text()


def test_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    words = " ".join(out.split())  # argparse wraps lines wherever it likes
    for env in ("HOST", "PORT", "DATABASE_URL", "KERNEL_DELAY", "MAX_POINTS", "LOG_LEVEL"):
        assert f"env {env}" in words
    assert "postgresql://" in words


def test_bad_setting_stops_the_start_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT, capture_output=True, text=True,
        env={"DATABASE_URL": "mysql://db/calc", "PATH": ""},
    )  # fmt: skip
    assert result.returncode != 0
    assert "DATABASE_URL must look like sqlite:///" in result.stderr


def test_a_postgresql_that_cannot_be_reached_stops_the_start_in_one_line() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"DATABASE_URL": f"postgresql://calc:secret@127.0.0.1:{port}/calc", "PATH": ""},
    )  # fmt: skip
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"python -m service: cannot start: the database postgresql://calc:***@127.0.0.1:{port}/calc"
        " cannot be reached: "
    )
    assert "secret" not in line


def test_a_start_that_cannot_happen_is_one_clear_line(tmp_path: Path) -> None:
    """A bad setting, a database that cannot be opened and a port in use each stop the start
    with one line on stderr and a non-zero exit: no traceback."""
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"this is no SQLite file" * 100)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases = [
            ({"WORKERS": "0"}, "python -m service: WORKERS must be at least 1, got 0"),
            (
                {"DATABASE_URL": f"sqlite:///{tmp_path}/a-file.db/inside.db", "PORT": "0"},
                "python -m service: cannot start: the database sqlite:///",
            ),
            (
                {"DATABASE_URL": f"sqlite:///{not_a_database}", "PORT": "0"},
                "cannot be opened: file is not a database",
            ),
            (
                {
                    "DATABASE_URL": f"sqlite:///{tmp_path}/ok.db",
                    "PORT": str(taken.getsockname()[1]),
                },
                "address already in use",
            ),
        ]
        (tmp_path / "a-file.db").write_text("a file, not a folder")
        for env, said in cases:
            result = subprocess.run(
                [sys.executable, "-m", "service"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
                env={**os.environ, "LOG_LEVEL": "WARNING", **env},
            )  # fmt: skip
            assert result.returncode != 0, env
            assert "Traceback" not in result.stderr, result.stderr
            last = result.stderr.strip().splitlines()[-1]
            assert said in last, (env, result.stderr)


def test_settings_come_from_the_environment() -> None:
    config = Config.from_env(
        {"PORT": "9000", "KERNEL_DELAY": "0.5", "DATABASE_URL": "sqlite:////data/x.db"}
    )
    assert config.port == 9000
    assert config.kernel_delay == 0.5
    assert config.db_path == Path("/data/x.db")
    assert Config.from_env({"DATABASE_URL": "sqlite:///var/x.db"}).db_path == Path("var/x.db")
    assert Config.from_env({}).db_path == Path("var/calculations.db")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a int"),
        ({"WORKERS": "0"}, "WORKERS must be at least 1"),
        ({"KERNEL_DELAY": "-1"}, "KERNEL_DELAY must not be negative"),
        ({"MAX_POINTS": "0"}, "MAX_POINTS must be at least 1"),
        ({"DATABASE_URL": "sqlite:///"}, "DATABASE_URL must look like"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(env)


async def test_openapi_document_describes_every_method_and_error(client: Client) -> None:
    resp = await client.get("/api/docs/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    create = paths["/api/v1/calculations"]["post"]
    assert {"201", "400", "422"} <= set(create["responses"])
    assert "requestBody" in create
    listing = paths["/api/v1/calculations"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"page", "per_page", "order", "status"}
    one = paths["/api/v1/calculations/{calc_id}"]["get"]
    assert {"200", "404", "422"} <= set(one["responses"])
    assert {"204", "404"} <= set(paths["/api/v1/calculations/{calc_id}"]["delete"]["responses"])
    by_filter = paths["/api/v1/calculations"]["delete"]
    assert {p["name"] for p in by_filter["parameters"]} == {"status", "finished_before"}
    assert {"200", "422"} <= set(by_filter["responses"])
    schemas = spec["components"]["schemas"]
    assert {
        "CalculationRequest",
        "CalculationOut",
        "CalculationPage",
        "ErrorOut",
        "Deleted",
    } <= set(schemas)


async def test_swagger_ui_is_served_without_network(client: Client) -> None:
    resp = await client.get("/api/docs")
    assert resp.status == 200
    page = await resp.text()
    assert "swagger" in page.lower()
    assert "https://" not in page


def test_command_line_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.__main__ import parse_args

    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("KERNEL_DELAY", "3")
    config = parse_args(["--port", "9002", "--database-url", "sqlite:///x.db"])
    assert config.port == 9002
    assert config.kernel_delay == 3.0
    assert config.db_path == Path("x.db")
