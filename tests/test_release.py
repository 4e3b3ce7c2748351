"""The release: `make dist` builds a source archive with every file of the project and a
wheel that starts anywhere, with no settings."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, unmeasured_environ, wait_until_up

VERSION = "1.0.0"
# What the source archive adds of its own: its metadata, made by the build.
ARCHIVE_METADATA = ("PKG-INFO", "calculations.egg-info/")
# Never part of the project, wherever a tree was unpacked or cloned.
NOT_PROJECT = {".git", ".venv", "var", "build", "dist", "__pycache__", ".mypy_cache",
               ".ruff_cache", ".pytest_cache", "calculations.egg-info",
               "calculations_client.egg-info"}  # fmt: skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Unmeasured: the build's Python processes run none of the project's code, and tracing
    # them made the build ten times slower.
    subprocess.run(
        ["make", "-C", str(ROOT), "dist", f"DIST={out}"],
        check=True,
        capture_output=True,
        env=unmeasured_environ(),
    )
    return out


def pip(venv: Path, *args: str) -> str:
    """Our pip, run on the venv's Python: a venv made without pip of its own is faster."""
    argv = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def venv_with(venv: Path, wheel: Path) -> Path:
    """A new venv with `wheel` and what it depends on installed, and nothing else."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip(venv, "install", "--quiet", "--no-compile", str(wheel))
    return venv


def project_files() -> set[str]:
    """The files of the project: in a clone, what git tracks or would (new files it does not
    ignore); in an unpacked archive, which has no git, every file but what is built or cached."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(
            # Tracked, and new files git does not ignore: what the next commit may hold.
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return set(listed.stdout.split())
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in NOT_PROJECT]
        for name in files:
            if not name.endswith((".pyc", ".db", ".db-wal", ".db-shm")) and name != ".coverage":
                found.add(str((Path(folder) / name).relative_to(ROOT)))
    return found


def test_source_archive_holds_every_project_file_and_nothing_else(
    dist: Path, tmp_path: Path
) -> None:
    archive = dist / f"calculations-{VERSION}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    top = tmp_path / f"calculations-{VERSION}"
    unpacked = {str(path.relative_to(top)) for path in top.rglob("*") if path.is_file()}
    made = {name for name in unpacked if name.startswith(ARCHIVE_METADATA)}
    assert made  # the archive is a real sdist: pip installs from it
    assert unpacked - made == project_files()
    for needed in ("Makefile", "Dockerfile", "LICENSE", "schema.sql", "docs/architecture.md"):
        assert needed in unpacked


def test_wheel_starts_outside_the_source_tree_with_no_settings(dist: Path, tmp_path: Path) -> None:
    venv = venv_with(tmp_path / "venv", dist / f"calculations-{VERSION}-py3-none-any.whl")
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SCHEMA_PATH", "PYTHONPATH", "DATABASE_URL")
    }
    env.update(PORT=str(port), KERNEL_DELAY="0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [venv / "bin" / "python", "-m", "service"],
            cwd=elsewhere,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "no answer within 60 s"
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (elsewhere / "var" / "calculations.db").exists()  # the default, where it was started


SERVER_ONLY = {"pandas", "numpy", "marshmallow", "aiosqlite", "asyncpg", "prometheus-client",
               "aiohttp-apigami", "calculations"}  # fmt: skip


def test_client_wheel_installs_without_the_server_and_talks_to_it(
    dist: Path, tmp_path: Path, start_server: Any
) -> None:
    venv = venv_with(tmp_path / "venv", dist / f"calculations_client-{VERSION}-py3-none-any.whl")
    installed = {
        package["name"].lower() for package in json.loads(pip(venv, "list", "--format", "json"))
    }
    assert "calculations-client" in installed
    assert installed & SERVER_ONLY == set()
    _, url = start_server({})
    asyncio.run(wait_until_up(url))
    argv = [venv / "bin" / "calculations", "--url", url, "--json", "submit"]
    argv += ["--start", "2024-01-01", "--fin", "2024-01-31", "--lag", "7", "--wait"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (done.returncode, json.loads(done.stdout)["status"]) == (0, "done")
