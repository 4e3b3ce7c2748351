"""Processes the benchmark starts (our server, the ceilings) and what /proc says about them."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from service.config import Config

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# Settings of ours the benchmark fixes, whatever the calling shell has.
SERVICE_ENV = {
    "HOST": HOST,
    "KERNEL_DELAY": "0",
    "LOG_LEVEL": "WARNING",
    "MAX_QUEUED": "10000000",  # intake never meets the queue limit
    "SHUTDOWN_GRACE": "2",  # a stop never waits long for a kernel; measures nothing
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server subprocess on a loopback port, its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def database_url(where: Path | str) -> str:
    """A SQLite file's URL; a URL as it is."""
    return where if isinstance(where, str) else f"sqlite:///{where.resolve()}"


def service_env(where: Path | str, port: int, **settings: str) -> dict[str, str]:
    """The environment of our server: the caller's, less any setting of ours, plus the bench's
    and `settings`; its database is a SQLite file or a URL."""
    ours = {field.name.upper() for field in fields(Config)}
    env = {key: value for key, value in os.environ.items() if key not in ours}
    env.update(SERVICE_ENV, DATABASE_URL=database_url(where), PORT=str(port), **settings)
    return env


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Server:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Server(name, proc, int(env.get("PORT", "0")), log_path)


def start_service(name: str, where: Path | str, log_dir: Path, **settings: str) -> Server:
    """`python -m service` on a free port; not waited for."""
    port = free_port()
    env = service_env(where, port, **settings)
    return spawn(name, [sys.executable, "-m", "service"], env, log_dir)


def start_ceiling(name: str, kind: str, log_dir: Path, *args: str) -> Server:
    """`python -m bench.ceilings KIND --port N ...` on a free port; not waited for."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.ceilings", kind, "--port", str(port), *args]
    return spawn(name, argv, {**os.environ, "PORT": str(port)}, log_dir)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(set(found))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def mapped_files(pid: int, words: tuple[str, ...]) -> list[str]:
    """Files mapped into the process whose path contains one of `words` (shared libraries)."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and any(word in parts[5] for word in words):
            found.add(parts[5])
    return sorted(found)
