"""A throwaway PostgreSQL server: Debian's binaries (`make tools` installs them), a fresh
cluster in a scratch folder, a free loopback port, stopped and removed at the end.

The server refuses to run as root, so when we are root its commands run as the `postgres`
user, which Debian's package creates. pytest-postgresql's process fixture would run them as
the current user, which is root in CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench.procs import free_port

BINARIES = Path("/usr/lib/postgresql")


def bin_dir() -> Path:
    """The newest installed version's binaries."""
    found = sorted(BINARIES.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's server is missing under {BINARIES}: `make tools` installs Debian's"
            " `postgresql`"
        )
    return found[-1].parent


def server_folder() -> Path:
    """A scratch folder the server user owns and can reach."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


async def run_as_server_user(*argv: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {output.decode(errors='replace')}")


@asynccontextmanager
async def throwaway_server() -> AsyncIterator[str]:
    """A running server's URL, for its `postgres` superuser, trusted on loopback."""
    binaries, folder = bin_dir(), server_folder()
    data, port = folder / "data", free_port()
    pg_ctl = str(binaries / "pg_ctl")
    try:
        await run_as_server_user(
            str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        await run_as_server_user(
            pg_ctl, "start", "-w", "-D", str(data), "-o", options, "-l", str(folder / "server.log")
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            await run_as_server_user(pg_ctl, "stop", "-m", "fast", "-D", str(data))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
