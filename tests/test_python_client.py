"""The Python client (client/, `calculations_client`) against the real server, started as a
subprocess: sweeps through `map`, DataFrames, pages, typed errors, and retries that never
create a run twice (a lost answer, a restart of the service, a full queue, a restart of
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas
import pytest

from bench.postgres import throwaway_server
from calculations_client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    Retry,
    Run,
    Unauthorized,
    Unavailable,
)
from calculations_client.frames import frame_of
from calculations_client.progress import Quiet, bar
from tests.conftest import (
    SMALL_RUN,
    TEST_SERVER_SETTINGS,
    database,
    free_port,
    imported_of,
    serve,
    wait_until_up,
)

QUICK = Retry(attempts=3, total=2.0, backoff=0.05)  # for the tests that expect retries spent


def api_json(url: str) -> Any:
    """A GET as any HTTP client makes it, to check the client against."""
    with urllib.request.urlopen(url) as answer:
        return json.load(answer)


def count_runs(where: str) -> int:
    return int(database(where, "SELECT count(*) FROM calculations")[0][0])


def sweep(n: int) -> list[dict[str, Any]]:
    """`n` parameter sets, each its own lag and end, so that each run is told apart."""
    return [
        {"date_start": "2024-01-01", "date_fin": f"2024-{1 + i % 12:02d}-28", "lag": 1 + i}
        for i in range(n)
    ]


def test_map_runs_a_sweep_of_50_and_returns_each_run_in_input_order(service_url: str) -> None:
    params = sweep(50)
    with Client(service_url) as client:
        runs = client.map(params, progress=False, concurrency=4)
    assert len(runs) == 50
    assert len({run.id for run in runs}) == 50
    for one, run in zip(params, runs, strict=True):
        assert run.status == "done"
        assert (run.lag, run.date_fin) == (one["lag"], date.fromisoformat(one["date_fin"]))
        assert run.result == api_json(f"{service_url}/api/v1/calculations/{run.id}")["result"]


def test_async_map_takes_a_dataframe_and_matches_the_api(service_url: str) -> None:
    params = pandas.DataFrame(sweep(12))
    params["date_start"] = pandas.to_datetime(params["date_start"])  # Timestamps are days too

    async def go() -> list[Run]:
        async with AsyncClient(service_url) as client:
            return await client.map(params, progress=False, concurrency=3)

    runs = asyncio.run(go())
    assert [run.lag for run in runs] == list(range(1, 13))
    for run in runs:
        body = api_json(f"{service_url}/api/v1/calculations/{run.id}?fields=name,lag")
        assert (run.status, run.name, run.result) == ("done", body["name"], body["result"])


def test_map_refuses_a_parameter_set_it_cannot_send_before_creating_anything(
    service_url: str, database_url: str
) -> None:
    with (
        Client(service_url) as client,
        pytest.raises(ValueError, match="parameter set 1: missing lag"),
    ):
        client.map([SMALL_RUN, {"date_start": "2024-01-01", "date_fin": "2024-02-01"}])
    assert count_runs(database_url) == 0


def test_map_stops_at_the_first_refusal_and_raises_it(service_url: str) -> None:
    bad = [*sweep(3), {**SMALL_RUN, "lag": 0}]
    with Client(service_url) as client, pytest.raises(InvalidRequest) as refused:
        client.map(bad, progress=False, concurrency=2)
    assert "lag" in refused.value.fields

    async def go() -> None:
        async with AsyncClient(service_url) as client:
            await client.map(bad, progress=False, concurrency=2)

    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(go())
    assert "lag" in refused.value.fields


def test_result_is_a_dataframe_of_the_json(service_url: str) -> None:
    with Client(service_url) as client:
        run = client.wait(client.submit("2024-01-01", "2030-12-31", 1, seed=7).id)
        frame = client.result(run.id)
    rows = api_json(f"{service_url}/api/v1/calculations/{run.id}")["result"]
    assert list(frame.columns) == ["date", "liquid", "oil", "water", "wct"]
    assert frame["date"].dtype.kind == "M"
    assert all(frame[name].dtype == "float64" for name in ("liquid", "oil", "water", "wct"))
    assert len(frame) == len(rows)
    assert [day.date().isoformat() for day in frame["date"]] == [row["date"] for row in rows]
    for name in ("liquid", "oil", "water", "wct"):
        for value, row in zip(frame[name], rows, strict=True):
            assert math.isnan(value) if row[name] is None else value == row[name]


def test_a_null_in_the_json_is_nan_in_the_frame_and_no_rows_keep_the_dtypes() -> None:
    # The kernel's liquid never reaches 0 on real parameters, so the rows are written here.
    rows = [
        {"date": "2024-01-01", "liquid": 0.0, "oil": 0.0, "water": 0.0, "wct": None},
        {"date": "0001-01-02", "liquid": 10.0, "oil": 8.0, "water": 2.0, "wct": 0.2},
    ]
    frame = frame_of(rows)
    assert math.isnan(frame["wct"][0])
    assert frame["wct"][1] == 0.2
    assert [str(day)[:10] for day in frame["date"]] == ["2024-01-01", "0001-01-02"]
    empty = frame_of([])
    assert list(empty.dtypes) == list(frame.dtypes)


def test_async_result_and_submit_fields(service_url: str) -> None:
    async def go() -> tuple[Run, Run, pandas.DataFrame]:
        async with AsyncClient(service_url) as client:
            created = await client.submit(
                date(2024, 1, 1), "2024-03-31", 7, name="first sweep", seed=42
            )
            run = await client.wait(created.id, timeout=30)
            return created, run, await client.result(run.id)

    created, run, frame = asyncio.run(go())
    assert (created.status, created.result) in {("queued", None), ("running", None)}
    assert (run.name, run.seed, run.lag, run.attempts) == ("first sweep", 42, 7, 1)
    assert run.duration is not None
    assert run.finished_at is not None
    assert run.created_at is not None
    assert run.created_at.tzinfo is not None
    assert len(frame) == len(run.result or []) == 13


def test_wait_long_polls_and_raises_timeout_error(start_server: Any) -> None:
    url = serve(start_server, KERNEL_DELAY="30")
    with Client(url) as client:
        run = client.submit(**SMALL_RUN)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"run {run.id} is still running after 1.5 s"):
            client.wait(run.id, timeout=1.5)
        waited = time.monotonic() - started
        client.cancel(run.id)
    assert 1.5 <= waited < 5


def test_runs_walks_every_page_both_ways_and_by_status(service_url: str, database_url: str) -> None:
    with Client(service_url) as client:
        ids = [client.submit(**SMALL_RUN).id for _ in range(230)]  # three pages of 100
        client.wait(ids[-1])
        newest = [run.id for run in client.runs()]
        oldest = [run.id for run in client.runs(order="asc")]
        done = list(client.runs(status="done"))
    assert newest == sorted(ids, reverse=True)
    assert oldest == sorted(ids)
    assert {run.id for run in done} == set(ids)
    assert all(run.status == "done" and run.name and run.created_at for run in done)


def test_async_runs_walks_every_page(service_url: str) -> None:
    async def go() -> tuple[list[int], list[int]]:
        async with AsyncClient(service_url) as client:
            ids = [(await client.submit(**SMALL_RUN)).id for _ in range(150)]
            return ids, [run.id async for run in client.runs(order="asc")]

    ids, walked = asyncio.run(go())
    assert walked == ids


def test_cancel_delete_and_csv(start_server: Any, tmp_path: Path) -> None:
    url = serve(start_server, KERNEL_DELAY="30")
    with Client(url) as client:
        running = client.submit(**SMALL_RUN)
        queued = client.submit(**SMALL_RUN)
        assert client.cancel(queued.id).status == "cancelled"
        with pytest.raises(Conflict) as ended:
            client.cancel(queued.id)
        assert ended.value.code == "conflict"
        with pytest.raises(Conflict) as no_result:
            client.result(queued.id)
        assert (no_result.value.code, no_result.value.status) == ("no_result", 409)
        with pytest.raises(Conflict, match="no_result"):
            client.csv(running.id, tmp_path / "early.csv")
        client.delete(running.id)
        with pytest.raises(NotFound):
            client.get(running.id)
        with pytest.raises(NotFound):
            client.delete(running.id)
    assert not (tmp_path / "early.csv").exists()


def test_csv_is_the_api_s_csv(service_url: str, tmp_path: Path) -> None:
    async def go() -> int:
        async with AsyncClient(service_url) as client:
            run = await client.wait((await client.submit(**SMALL_RUN)).id)
            await client.csv(run.id, tmp_path / "async.csv")
            return run.id

    calc_id = asyncio.run(go())
    with Client(service_url) as client:
        client.csv(calc_id, tmp_path / "sync.csv")
    with urllib.request.urlopen(f"{service_url}/api/v1/calculations/{calc_id}/result.csv") as got:
        expected = got.read()
    assert (tmp_path / "sync.csv").read_bytes() == expected
    assert (tmp_path / "async.csv").read_bytes() == expected


def test_async_cancel_delete_and_their_errors(start_server: Any) -> None:
    url = serve(start_server, KERNEL_DELAY="30")

    async def go() -> None:
        async with AsyncClient(url) as client:
            run = await client.submit(**SMALL_RUN)
            assert (await client.cancel(run.id)).status == "cancelled"
            with pytest.raises(Conflict):
                await client.cancel(run.id)
            with pytest.raises(Conflict, match="no_result"):
                await client.result(run.id)
            await client.delete(run.id)
            with pytest.raises(NotFound):
                await client.get(run.id)

    asyncio.run(go())


def test_errors_are_typed_and_read_from_the_json(start_server: Any, database_url: str) -> None:
    url = serve(start_server, API_TOKEN="s3cret")
    with Client(url, token="s3cret") as client:
        with pytest.raises(NotFound) as missing:
            client.get(10**17)
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(InvalidRequest) as invalid:
            client.submit("2024-02-30", "2024-01-01", 1.5)  # type: ignore[arg-type]
        assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")
        assert {"date_start", "lag"} <= set(invalid.value.fields)
        assert "lag:" in str(invalid.value)
        client.submit(**SMALL_RUN, idempotency_key="order-42")
        with pytest.raises(Conflict) as reused:
            client.submit("2024-01-01", "2024-06-30", 7, idempotency_key="order-42")
        assert reused.value.status == 409
    for token in (None, "wrong"):
        with Client(url, token=token) as client, pytest.raises(Unauthorized) as refused:
            client.submit(**SMALL_RUN)
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert count_runs(database_url) == 1  # only the one the right token made


def test_async_errors_are_typed(start_server: Any) -> None:
    url = serve(start_server, API_TOKEN="s3cret")

    async def go() -> None:
        async with AsyncClient(url, token="s3cret") as client:
            with pytest.raises(NotFound):
                await client.get(123)
            with pytest.raises(InvalidRequest) as invalid:
                await client.submit("2024-01-01", "2024-01-31", 0)
            assert list(invalid.value.fields) == ["lag"]
        async with AsyncClient(url) as client:
            with pytest.raises(Unauthorized):
                await client.get(1)

    asyncio.run(go())


def test_unreachable_is_unavailable_after_bounded_retries_with_the_cause() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, retry=QUICK) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as gone:
            client.submit(**SMALL_RUN)
        spent = time.monotonic() - started
    assert (gone.value.status, gone.value.code) == (None, "unreachable")
    assert "after 3 tries" in gone.value.message
    assert isinstance(gone.value.__cause__, ConnectionRefusedError)
    assert spent < 2.5

    async def go() -> ApiError:
        async with AsyncClient(url, retry=QUICK) as client:
            with pytest.raises(Unavailable) as gone:
                await client.get(1)
            return gone.value

    error = asyncio.run(go())
    assert error.code == "unreachable"
    assert error.__cause__ is not None
    assert not isinstance(error, OSError)


class LosesFirstAnswer:
    """A TCP relay in front of the service that passes the first request on, then closes the
    client's connection without its answer: the answer is lost after the run was made. Every
    later connection is relayed whole."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.relay, args=(near, self.connections), daemon=True).start()

    def relay(self, near: socket.socket, number: int) -> None:
        far = socket.create_connection(("127.0.0.1", self.target_port))
        if number == 1:
            far.sendall(near.recv(65536))
            far.recv(65536)  # the service answered: the run exists
            near.close()
            far.close()
            return
        threading.Thread(target=pipe, args=(far, near), daemon=True).start()
        pipe(near, far)

    def close(self) -> None:
        self.listener.close()


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            end.close()


@pytest.fixture
def lossy(service_url: str) -> Iterator[LosesFirstAnswer]:
    relay = LosesFirstAnswer(int(service_url.rpartition(":")[2]))
    yield relay
    relay.close()


def test_a_create_whose_answer_was_lost_is_retried_into_one_run(
    lossy: LosesFirstAnswer, database_url: str
) -> None:
    with Client(lossy.url) as client:
        run = client.submit(**SMALL_RUN)
    assert lossy.connections == 2  # the first answer was lost, the retry went through
    assert database(database_url, "SELECT id FROM calculations") == [(run.id,)]


def test_async_create_whose_answer_was_lost_makes_one_run(
    lossy: LosesFirstAnswer, database_url: str
) -> None:
    async def go() -> Run:
        async with AsyncClient(lossy.url) as client:
            return await client.submit(**SMALL_RUN)

    run = asyncio.run(go())
    assert lossy.connections == 2
    assert database(database_url, "SELECT id FROM calculations") == [(run.id,)]


def test_a_delete_whose_answer_was_lost_is_done_once(
    service_url: str, lossy: LosesFirstAnswer, database_url: str
) -> None:
    with Client(service_url) as direct:
        calc_id = direct.submit(**SMALL_RUN).id
    with Client(lossy.url) as client:
        client.delete(calc_id)  # the retry's 404 means the first try deleted it
    assert lossy.connections == 2
    assert count_runs(database_url) == 0


def test_a_create_across_a_restart_of_the_service_makes_one_run(
    start_server: Any, tmp_path: Path, database_url: str
) -> None:
    proc, url = start_server({})
    asyncio.run(wait_until_up(url))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made: list[Run] = []
    with Client(url) as client:
        creating = threading.Thread(target=lambda: made.append(client.submit(**SMALL_RUN)))
        creating.start()
        time.sleep(1.0)  # its first tries are refused: nothing listens
        assert made == []
        start_server({"PORT": url.rpartition(":")[2]}, "again.log")  # the same port
        creating.join(30)
        assert made, "the create did not succeed once the service was back"
        assert made[0].status in {"queued", "running", "done"}
        assert client.wait(made[0].id, timeout=30).done
    assert database(database_url, "SELECT id FROM calculations") == [(made[0].id,)]


def test_a_full_queue_is_retried_after_retry_after_into_one_run(
    start_server: Any, database_url: str
) -> None:
    url = serve(start_server, KERNEL_DELAY="30", MAX_QUEUED="1")
    with Client(url) as client:
        client.submit(**SMALL_RUN)  # running
        waiting = client.submit(**SMALL_RUN)  # queued: the queue is full
        impatient = Client(url, retry=Retry(attempts=2, total=1.0))
        with impatient, pytest.raises(Unavailable) as full:
            impatient.submit(**SMALL_RUN)
        assert (full.value.status, full.value.code) == (429, "queue_full")
        threading.Timer(1.0, client.cancel, args=(waiting.id,)).start()
        started = time.monotonic()
        made = client.submit("2024-01-01", "2024-06-30", 7)
        waited = time.monotonic() - started
    assert waited >= 1.0  # it waited for the queue, as Retry-After said
    rows = database(database_url, "SELECT id FROM calculations WHERE date_fin = '2024-06-30'")
    assert rows == [(made.id,)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_create_across_a_restart_of_postgresql_makes_one_run(
    start_server: Any, kind: str
) -> None:
    with throwaway_server(*TEST_SERVER_SETTINGS) as pg:
        url = serve(start_server, DATABASE_URL=pg.url)
        made: list[Run] = []

        def create() -> None:
            if kind == "sync":
                with Client(url) as client:
                    made.append(client.submit(**SMALL_RUN))
                return

            async def go() -> None:
                async with AsyncClient(url) as client:
                    made.append(await client.submit(**SMALL_RUN))

            asyncio.run(go())

        pg.stop("fast")
        with Client(url, retry=QUICK) as impatient, pytest.raises(Unavailable) as down:
            impatient.submit(**SMALL_RUN)
        assert (down.value.status, down.value.code) == (503, "database_unavailable")
        creating = threading.Thread(target=create)
        creating.start()
        time.sleep(2.5)  # 503s with Retry-After: 2 meanwhile
        assert made == []
        pg.start()
        creating.join(60)
        assert made, "the create did not succeed once PostgreSQL was back"
        assert database(pg.url, "SELECT id FROM calculations") == [(made[0].id,)]


def test_the_client_imports_none_of_the_server_s_dependencies() -> None:
    server = {"service", "pandas", "numpy", "marshmallow", "asyncpg", "aiosqlite", "psycopg"}
    assert imported_of("calculations_client", server) == []


def test_sync_map_works_where_a_loop_already_runs_as_in_a_notebook(
    service_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def cell() -> list[Run]:  # a notebook's cell runs inside the kernel's event loop
        with Client(service_url) as client:
            return client.map(sweep(5))  # progress=True, but stderr is no terminal here

    runs = asyncio.run(cell())
    assert [run.lag for run in runs] == [1, 2, 3, 4, 5]
    assert all(run.done for run in runs)
    assert capsys.readouterr().err == ""  # quiet without a terminal


def test_ctrl_c_stops_a_sync_map_at_once(start_server: Any, database_url: str) -> None:
    url = serve(start_server, KERNEL_DELAY="30")
    code = (
        "import sys\n"
        "from calculations_client import Client\n"
        "sets = [{'date_start': '2024-01-01', 'date_fin': '2024-01-31', 'lag': 7}] * 20\n"
        "try:\n"
        f"    Client({url!r}).map(sets, progress=False)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(130)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while count_runs(database_url) < 20:
        assert time.monotonic() < deadline, "the sweep was not submitted"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, _ = proc.communicate(timeout=10)
    assert (proc.returncode, out) == (130, "interrupted\n")
    assert time.monotonic() - started < 3  # not after the runs' 30 s
    statuses = database(database_url, "SELECT status, count(*) FROM calculations GROUP BY 1")
    assert dict(statuses) == {"running": 1, "queued": 19}  # the runs stay, as submitted


def test_the_plain_progress_line_when_tqdm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # tqdm is an extra: without it the bar is one line of text (the import is made to fail).
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    main, child = pty.openpty()
    with os.fdopen(child, "w") as terminal:
        shown = bar(3, True, terminal)
        for _ in range(3):
            shown.update()
        shown.close()
        seen = b""
        while not seen.endswith(b"\n"):  # the terminal passes it on in its own time
            readable, _, _ = select.select([main], [], [], 5)
            assert readable, f"the line stopped at {seen!r}"
            seen += os.read(main, 4096)
    os.close(main)
    expected = "".join(f"\rruns ended: {n}/3" for n in range(4)) + "\n"
    assert seen.decode().replace("\r\n", "\n") == expected
    assert isinstance(bar(3, False, sys.stderr), Quiet)


def test_a_connection_the_service_closed_while_idle_is_not_reused(
    start_server: Any, database_url: str
) -> None:
    url = serve(start_server, CLIENT_TIMEOUT="1")  # it closes connections idle for 1 s
    with Client(url, retry=Retry(attempts=1)) as client:  # a lost request would raise
        client.submit(**SMALL_RUN)
        time.sleep(1.5)
        client.submit(**SMALL_RUN)
        assert client.get(1).id == 1
    assert count_runs(database_url) == 2
