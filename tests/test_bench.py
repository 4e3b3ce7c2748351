"""The benchmark harness runs end to end in tiny mode. Its numbers are noise there: only the
shape of the report and that every scenario was measured are checked, never a target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import ERROR, HEADER, parse_table
from tests.conftest import unmeasured_environ

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "sqlite": [
        "intake", "queue", "client", "latency", "large", "list", "pruning", "responsive",
        "memory", "start", "drivers", "scaling",
    ],
    "postgresql": [
        "intake", "queue", "client", "latency", "large", "list", "responsive", "memory",
        "start", "scaling",
    ],
}  # fmt: skip


@pytest.mark.parametrize("backend", list(SCENARIOS))
def test_tiny_benchmark_measures_every_scenario(tmp_path: Path, backend: str) -> None:
    assert shutil.which("wrk"), "wrk is missing: `make test` installs it (apt-get install wrk)"
    # Not measured by coverage: the benchmark's servers run what the other tests measure,
    # and measuring them made this test several times slower.
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--backend", backend, "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        env=unmeasured_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    document = json.loads((tmp_path / "latest.json").read_text())
    stamped = [path for path in tmp_path.glob("*.json") if path.name != "latest.json"]
    assert len(stamped) == 1
    assert json.loads(stamped[0].read_text()) == document

    rows = document["rows"]
    assert (document["mode"], document["backend"]) == ("tiny", backend)
    assert document["columns"] == list(HEADER)
    scenarios = SCENARIOS[backend]
    assert list(document["scenarios"]) == scenarios
    assert {name: outcome["status"] for name, outcome in document["scenarios"].items()} == (
        dict.fromkeys(scenarios, "ok")
    )
    assert sorted({row["scenario"] for row in rows}) == sorted(scenarios)
    assert [row for row in rows if row["result"] == ERROR] == []
    assert {row["result"] for row in rows} <= {"pass", "FAIL", "info"}

    printed = parse_table(proc.stdout)
    assert printed == [row["cells"] for row in rows]
    assert all(len(cells) == len(HEADER) and all(cells) for cells in printed)

    machine = document["machine"]
    assert machine["nproc"] >= 1
    assert machine["python"] == sys.version.split()[0]
    assert set(machine["packages"]) == {"aiohttp", "aiosqlite", "asyncpg", "pandas", "numpy"}
    assert machine["sqlite"]
