"""Schema versions: each database records the version of its schema, and the numbered
migrations in `migrations/<backend>/NNNN_name.sql` bring an older one up to date at start.

Each migration runs in one transaction with the record of its version, under a lock (the
write lock of a SQLite file, an advisory lock on PostgreSQL), and the version is read again
under that lock: processes starting together apply each migration once. A database whose
version is newer than this release knows is refused. Migrations change the schema only,
which takes the same short time on a database of any size; rows are rewritten in the
background (service/maintenance.py).

Databases made before versions were recorded carry none; their version is told from what
they hold (`sqlite_version`, `postgres_version`).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from service.db import DatabaseUnavailable

if TYPE_CHECKING:
    import asyncpg

MIGRATIONS = Path(__file__).with_name("migrations")
FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")
POSTGRES_LOCK = 7316200000  # the advisory lock processes starting together migrate under

Backend = Literal["sqlite", "postgres"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        return split_statements(self.path.read_text())


@functools.cache
def migrations(backend: Backend) -> tuple[Migration, ...]:
    """The backend's migrations in order, numbered 1, 2, 3… without a gap (looked for once)."""
    found = []
    for path in sorted((MIGRATIONS / backend).glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        assert match, f"a migration is named NNNN_name.sql: {path}"
        found.append(Migration(int(match.group(1)), match.group(2), path))
    assert [m.version for m in found] == list(range(1, len(found) + 1)), found
    return tuple(found)


def latest(backend: Backend) -> int:
    return migrations(backend)[-1].version


class SchemaTooNew(DatabaseUnavailable):
    """The database was made or migrated by a newer release."""


def refuse_newer(version: int, backend: Backend, where: str) -> None:
    known = latest(backend)
    if version > known:
        raise SchemaTooNew(
            f"the database {where} has schema version {version}, and this release knows"
            f" versions up to {known}: run the release that migrated it, or a newer one"
        )


def split_statements(script: str) -> list[str]:
    """A script's statements, each whole (a trigger's body holds semicolons of its own)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    assert not pending.strip(), f"an unfinished statement: {pending!r}"
    return statements


# SQLite: the version is PRAGMA user_version, and BEGIN IMMEDIATE the lock.


def sqlite_version(conn: sqlite3.Connection) -> int:
    recorded: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if recorded:
        return recorded
    columns = {row[1] for row in conn.execute("PRAGMA table_info(calculations)")}
    if not columns:
        return 0  # a new file
    return 2 if "worker_id" in columns else 1


def migrate_sqlite_file(db_path: Path, schema_path: Path, busy_timeout_ms: int) -> int:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        return migrate_sqlite(conn, schema_path, str(db_path))
    finally:
        conn.close()


def migrate_sqlite(conn: sqlite3.Connection, schema_path: Path, where: str) -> int:
    """Bring the file to the latest version: a new file made from schema.sql (which records
    the version it is at), an older one migrated step by step. The version it ends at."""
    if sqlite_version(conn) == latest("sqlite"):  # every start but the first: no write lock
        return latest("sqlite")
    for migration in [None, *migrations("sqlite")]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = sqlite_version(conn)
            refuse_newer(version, "sqlite", where)
            if migration is None and version == 0:
                statements = split_statements(schema_path.read_text())
            elif migration is not None and version == migration.version - 1:
                statements = migration.statements()
                statements.append(f"PRAGMA user_version = {migration.version}")
            else:
                conn.execute("ROLLBACK")
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return sqlite_version(conn)


# PostgreSQL: the version is the one row of schema_version, and an advisory lock the lock.

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
)
"""


async def postgres_version(conn: asyncpg.Connection) -> int:
    recorded = await conn.fetchval("SELECT version FROM schema_version")
    if recorded is not None:
        return int(recorded)
    made = await conn.fetchval("SELECT to_regclass('calculations') IS NOT NULL")
    return 1 if made else 0


async def migrate_postgres(conn: asyncpg.Connection, where: str) -> int:
    """Bring the database to the latest version, one migration a transaction; the version it
    ends at. Under a session lock: the lock outlives each migration's transaction."""
    await conn.execute("SELECT pg_advisory_lock($1)", POSTGRES_LOCK)
    try:
        await conn.execute(SCHEMA_VERSION_TABLE)
        version = await postgres_version(conn)
        refuse_newer(version, "postgres", where)
        for migration in migrations("postgres")[version:]:
            async with conn.transaction():
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)"
                    " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
                    migration.version,
                )
            version = migration.version
        return version
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", POSTGRES_LOCK)
