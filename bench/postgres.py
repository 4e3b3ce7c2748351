"""A throwaway PostgreSQL server: Debian's binaries (`make tools` installs them), a fresh
cluster in a scratch folder, a free loopback port, stopped and removed at the end.

The server refuses to run as root, so when we are root its commands run as the `postgres`
user, which Debian's package creates. pytest-postgresql's process fixture would run them as
the current user, which is root in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


def server_folder(under: Path | None = None) -> Path:
    """A scratch folder the server user owns and can reach (in `under`, if given)."""
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir=under))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


def run_as_server_user(*argv: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stdout}{done.stderr}")


class Server:
    """A throwaway cluster that can be stopped and started again (a restart under load)."""

    def __init__(self, *settings: str, under: Path | None = None) -> None:
        self.folder = server_folder(under)
        self.port = free_port()
        self._pg_ctl = str(bin_dir() / "pg_ctl")
        self._data = str(self.folder / "data")
        options = [f"-p {self.port}", f"-k {self.folder}", "-c listen_addresses=127.0.0.1"]
        self._options = " ".join([*options, *(f"-c {setting}" for setting in settings)])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        run_as_server_user(
            str(bin_dir() / "initdb"), "-D", self._data, "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        log = str(self.folder / "server.log")
        run_as_server_user(
            self._pg_ctl, "start", "-w", "-D", self._data, "-o", self._options, "-l", log
        )

    def stop(self, mode: str = "fast") -> None:
        if Path(self._data, "postmaster.pid").exists():  # else stopped already
            run_as_server_user(self._pg_ctl, "stop", "-w", "-m", mode, "-D", self._data)


@contextmanager
def throwaway_server(*settings: str, under: Path | None = None) -> Iterator[Server]:
    """A running server, its `postgres` superuser trusted on loopback; `settings` are
    `name=value` server settings; its files in `under` if given (a small disk)."""
    server = Server(*settings, under=under)
    try:
        server.create()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)
