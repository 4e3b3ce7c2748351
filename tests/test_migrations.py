"""Schema versions and migrations: a database made by an older release of this project (taken
from its git history and really run) opens on this one with every run as it was, before and
after its rows are rewritten the compact way, and again on a second start; a database from a
newer release is refused in one line."""

from __future__ import annotations

import asyncio
import gzip
import io
import re
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.db.migrate import (
    SCHEMA_VERSION_TABLE,
    latest,
    migrate_sqlite,
    migrations,
    split_statements,
)
from tests.conftest import (
    ROOT,
    admin,
    database,
    free_port,
    none_ahead_of_an_older_one,
    wait_until_up,
)

# The first release, and the last before schema versions: the databases they made.
FIRST_RELEASE = "0575798"
LAST_UNVERSIONED_POSTGRES = "037111f"
# The last release whose PostgreSQL schema is version 2: claims not recorded by their store.
BEFORE_CLAIMED_BY = "585bec2"
RUNS = "/api/v1/calculations"
FIELDS = "name,duration,date_start,date_fin,lag,seed,started_at,finished_at,attempts"
KEYED = {"date_start": "2020-01-01", "date_fin": "2020-03-31", "lag": 1, "name": "keyed"}
LARGE = {"date_start": "1995-01-01", "date_fin": "2024-12-31", "lag": 1, "name": "large"}


def old_release(commit: str, into: Path) -> Path:
    """The project's tree at that commit, as `git archive` gives it."""
    if not (ROOT / ".git").exists():
        pytest.skip("an older release is taken from the project's git history, absent here")
    tree = into / commit
    archive = subprocess.run(
        ["git", "archive", commit], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


class Server:
    """`python -m service` of a tree (this release's, or an older one's), on a database."""

    def __init__(self, tree: Path, database_url: str, log: Path, **env: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        full_env = {
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": database_url,
            "PORT": self.url.rsplit(":", 1)[1],
            "KERNEL_DELAY": "0",
            **env,
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=tree, env=full_env, stdout=out, stderr=out
            )

    async def __aenter__(self) -> Server:
        await wait_until_up(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 30)


async def make_runs(session: aiohttp.ClientSession, base: str) -> list[int]:
    """Runs as an older release stored them: small, keyed, and large (its CSV read in
    pieces); each done."""
    ids = []
    for body, headers in [
        ({"date_start": "2024-01-01", "date_fin": "2024-01-31", "lag": 7}, {}),
        (KEYED, {"Idempotency-Key": "order-42"}),
        (LARGE, {}),
    ]:
        async with session.post(f"{base}{RUNS}", json=body, headers=headers) as resp:
            assert resp.status == 201
            ids.append((await resp.json())["id"])
    for calc_id in ids:
        async with session.get(f"{base}{RUNS}/{calc_id}?wait=60") as resp:
            assert (await resp.json())["status"] == "done"
    return ids


async def seen(session: aiohttp.ClientSession, base: str, ids: list[int]) -> dict[str, Any]:
    """Everything a client reads of these runs, byte for byte."""
    views: dict[str, Any] = {}
    for calc_id in ids:
        path = f"{base}{RUNS}/{calc_id}"
        async with session.get(path) as resp:
            views[f"{calc_id} json"] = await resp.read()
        async with session.get(f"{path}?fields={FIELDS}") as resp:
            views[f"{calc_id} fields"] = await resp.json()
        async with session.get(f"{path}/result.csv") as resp:
            views[f"{calc_id} csv"] = (resp.status, await resp.read())
        async with session.get(path, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.headers.get("Content-Encoding") == "gzip"
            views[f"{calc_id} gzip"] = gzip.decompress(await resp.read())
    async with session.get(f"{base}{RUNS}?per_page=100&order=asc") as resp:
        views["list"] = [item for item in (await resp.json())["items"] if item["id"] in ids]
    return views


async def keys_hold(session: aiohttp.ClientSession, base: str, keyed: int) -> None:
    """The Idempotency-Key still names its run: the same body finds it, another is refused."""
    headers = {"Idempotency-Key": "order-42"}
    async with session.post(f"{base}{RUNS}", json=KEYED, headers=headers) as resp:
        assert (resp.status, (await resp.json())["id"]) == (200, keyed)
    async with session.post(f"{base}{RUNS}", json={**KEYED, "lag": 2}, headers=headers) as resp:
        assert resp.status == 409


def uncompacted(database_url: str) -> int:
    [(count,)] = database(
        database_url, "SELECT count(*) FROM calculations WHERE result IS NOT NULL"
    )
    return int(count)


def raw_session() -> aiohttp.ClientSession:
    """Bodies as sent: gzip only where asked for, and then not undone by the client."""
    return aiohttp.ClientSession(auto_decompress=False, headers={"Accept-Encoding": "identity"})


async def upgrade_keeps_every_run(
    old_tree: Path, database_url: str, tmp_path: Path, version: tuple[str, int]
) -> None:
    async with raw_session() as session:
        async with Server(old_tree, database_url, tmp_path / "old.log") as old:
            ids = await make_runs(session, old.url)
            before = await seen(session, old.url, ids)
        assert uncompacted(database_url) == len(ids)  # stored the old way

        async with Server(ROOT, database_url, tmp_path / "new.log") as new:
            assert await seen(session, new.url, ids) == before  # read as stored, untouched
            async with asyncio.timeout(30):  # the rewrite, in the background
                while uncompacted(database_url):
                    await asyncio.sleep(0.1)
            assert await seen(session, new.url, ids) == before  # read the compact way
            await keys_hold(session, new.url, ids[1])
            async with session.post(f"{new.url}{RUNS}", json=LARGE) as resp:
                added = (await resp.json())["id"]
            assert added > ids[-1]  # ids go on from the old ones
        log = (tmp_path / "new.log").read_text()
        assert f"stored {len(ids)} run(s) of an older release the compact way" in log

        async with Server(ROOT, database_url, tmp_path / "again.log") as again:
            assert await seen(session, again.url, ids) == before
            await keys_hold(session, again.url, ids[1])
        [(recorded,)] = database(database_url, version[0])
        assert recorded == version[1]
        assert "compact way" not in (tmp_path / "again.log").read_text()


async def test_a_file_made_by_the_first_release_opens_with_every_run_as_it_was(
    tmp_path: Path,
) -> None:
    tree = old_release(FIRST_RELEASE, tmp_path)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await upgrade_keeps_every_run(tree, url, tmp_path, ("PRAGMA user_version", latest("sqlite")))


async def test_a_postgres_database_made_before_schema_versions_opens_with_every_run(
    tmp_path: Path, pg_url: str
) -> None:
    admin(pg_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")  # as a new database
    tree = old_release(LAST_UNVERSIONED_POSTGRES, tmp_path)
    version = ("SELECT version FROM schema_version", latest("postgres"))
    await upgrade_keeps_every_run(tree, pg_url, tmp_path, version)


async def computed(session: aiohttp.ClientSession, bases: list[str], n: int) -> list[Any]:
    """`n` runs created on these servers in turn, each done, as read once ended (id order)."""
    ids = []
    for i in range(n):
        async with session.post(f"{bases[i % len(bases)]}{RUNS}", json=KEYED | {"lag": i + 1}) as r:
            assert r.status == 201
            ids.append((await r.json())["id"])
    runs = []
    for calc_id in ids:
        path = f"{bases[0]}{RUNS}/{calc_id}?wait=60&fields=started_at,finished_at"
        async with session.get(path) as resp:
            runs.append(await resp.json())
    assert [run["status"] for run in runs] == ["done"] * n
    return runs


async def test_a_postgres_database_of_version_2_records_claims_while_its_release_still_runs(
    tmp_path: Path, pg_url: str
) -> None:
    """Migration 3 adds the record of which store claimed a run. A server of the release
    before that is still running when this one migrates (the new processes started before
    the old ones stopped) goes on storing and claiming beside it: no run is lost or computed
    ahead of an older one."""
    admin(pg_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")  # as a new database
    tree = old_release(BEFORE_CLAIMED_BY, tmp_path)
    # Each run takes long enough for the queue to hold some: kernels claim as they store.
    slow = {"WORKERS": "2", "KERNEL_DELAY": "0.1"}
    async with raw_session() as session:
        async with Server(tree, pg_url, tmp_path / "old.log", **slow) as old:
            ids = await make_runs(session, old.url)
            before = await seen(session, old.url, ids)
            assert database(pg_url, "SELECT version FROM schema_version") == [(2,)]
            async with Server(ROOT, pg_url, tmp_path / "new.log", **slow) as new:
                assert database(pg_url, "SELECT version FROM schema_version") == [(3,)]
                assert await seen(session, new.url, ids) == before
                assert none_ahead_of_an_older_one(await computed(session, [old.url, new.url], 30))
                assert await seen(session, old.url, ids) == before
        [(recorded,)] = database(
            pg_url, "SELECT count(*) FROM calculations WHERE claimed_by IS NOT NULL"
        )
        assert recorded > 0  # this release's kernel processes claimed as they stored
        async with Server(ROOT, pg_url, tmp_path / "again.log", **slow) as again:
            assert await seen(session, again.url, ids) == before
            assert none_ahead_of_an_older_one(await computed(session, [again.url], 30))


def sqlite_shape(conn: sqlite3.Connection) -> dict[str, Any]:
    """What a schema holds, whatever the order its columns were added in."""
    shape: dict[str, Any] = {}
    for kind, name, table, sql in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ):
        if kind == "table":
            columns = conn.execute(f"PRAGMA table_info({name})")  # cid: the order, left out
            shape[name] = sorted(column[1:] for column in columns)
        else:
            shape[name] = (kind, table, re.sub(r"\s+|IF NOT EXISTS", " ", sql or "").split())
    return shape


def test_the_migrations_from_the_first_release_make_what_schema_sql_makes(tmp_path: Path) -> None:
    fresh = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert migrate_sqlite(fresh, ROOT / "schema.sql", "fresh") == latest("sqlite")
    migrated = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    for statement in split_statements(migrations("sqlite")[0].path.read_text()):
        migrated.execute(statement)  # what the first release made, with no version recorded
    assert migrate_sqlite(migrated, ROOT / "schema.sql", "migrated") == latest("sqlite")
    assert sqlite_shape(migrated) == sqlite_shape(fresh)
    fresh_version = fresh.execute("PRAGMA user_version").fetchone()[0]
    assert fresh_version == migrated.execute("PRAGMA user_version").fetchone()[0] == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_database_of_a_newer_release_is_refused_in_one_line(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA user_version = 99")
        known = latest("sqlite")
    else:
        url = request.getfixturevalue("pg_url")
        admin(url, SCHEMA_VERSION_TABLE)
        admin(url, "DELETE FROM schema_version; INSERT INTO schema_version VALUES (true, 99)")
        known = latest("postgres")
    port = str(free_port())
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "PORT": port}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("python -m service: cannot start: the database ")
    assert f"has schema version 99, and this release knows versions up to {known}" in line
    if backend == "postgresql":  # the next test's database, made anew
        admin(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
