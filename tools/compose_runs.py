"""The runs of `tools/compose-check`, against the stack it brought up: RUNS runs created
through the API's published port, the worker container computing one SIGKILLed, then every
run checked done, and done once (one "done" line in all the workers' logs together)."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import time
import urllib.request

API, RUNS, PROJECT = os.environ["API"], int(os.environ["RUNS"]), os.environ["PROJECT"]
BODY = json.dumps({"date_start": "2024-01-01", "date_fin": "2024-03-31", "lag": 1}).encode()
DONE_LINE = re.compile(r"calculation (\d+) done in ")


def say(text: str) -> None:
    print(f"[compose-check {time.strftime('%H:%M:%S', time.gmtime())}] {text}", flush=True)


def podman(*args: str) -> str:
    """What the command printed, both streams (a container's log is its output and errors)."""
    done = subprocess.run(
        ["podman", *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return done.stdout


def sql(query: str) -> list[list[str]]:
    out = podman(
        "exec", f"{PROJECT}_postgres_1",
        "psql", "-U", "calculations", "-d", "calculations", "-At", "-F", "\t", "-c", query,
    )  # fmt: skip
    return [line.split("\t") for line in out.splitlines() if line]


def until(what: str, check, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit(f"compose-check: FAILED: no {what} within {timeout:g} s")


def health() -> dict | None:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"{API}/health", timeout=3) as resp:
        return json.load(resp) if resp.status == 200 else None


def create() -> int:
    request = urllib.request.Request(
        f"{API}/api/v1/calculations", BODY, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201, resp.status
        return int(json.load(resp)["id"])


def workers() -> list[str]:
    names = podman(
        "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
        "--filter", "label=com.docker.compose.service=worker", "--format", "{{.Names}}",
    )  # fmt: skip
    return sorted(names.split())


def healthy(container: str) -> bool:
    """compose.yaml's healthcheck of the container, run now: podman runs them from systemd
    timers, and there is no systemd here."""
    check = subprocess.run(["podman", "healthcheck", "run", container], capture_output=True)
    return check.returncode == 0


def main() -> None:
    for service in ("postgres", "api", "worker"):
        until(f"healthy {service}", lambda s=service: healthy(f"{PROJECT}_{s}_1"), 180)
        say(f"{PROJECT}_{service}_1: its healthcheck passes")
    say(f"API up: {until('answer from /health', health, 180)}")
    until("three registered workers", lambda: len(sql("SELECT id FROM workers")) >= 3, 120)
    started = time.monotonic()
    ids = [create() for _ in range(RUNS)]
    say(f"{len(ids)} runs created through {API} in {time.monotonic() - started:.1f} s")

    # The worker computing the oldest running run: its container's host name is in its record.
    host, running = until(
        "running run",
        lambda: (
            sql(
                "SELECT w.host, c.id FROM calculations c JOIN workers w"
                " ON w.id = c.worker_id WHERE c.status = 'running' ORDER BY c.id LIMIT 1"
            )
            or [None]
        )[0],
        60,
    )
    hostnames = {
        podman("inspect", "--format", "{{.Config.Hostname}}", name).strip(): name
        for name in workers()
    }
    victim = hostnames[host.split("/")[0]]
    cut = [
        int(row[0])
        for row in sql(
            "SELECT c.id FROM calculations c JOIN workers w ON w.id = c.worker_id"
            f" WHERE c.status = 'running' AND w.host = '{host}' ORDER BY c.id"
        )
    ]
    podman("kill", "--signal", "KILL", victim)
    say(f"SIGKILLed {victim} while it computed runs {cut} (run {running} among them)")

    def all_ended() -> bool:
        rows = sql("SELECT status, count(*) FROM calculations GROUP BY status")
        counts = {status: int(n) for status, n in rows}
        return counts.get("queued", 0) + counts.get("running", 0) == 0

    until("end of every run", all_ended, 600)
    elapsed = time.monotonic() - started
    rows = sql("SELECT id, status, attempts FROM calculations ORDER BY id")
    statuses = collections.Counter(status for _, status, _ in rows)
    again = {int(calc_id): int(attempts) for calc_id, _, attempts in rows if int(attempts) > 1}
    logs = {name: podman("logs", name) for name in workers()}
    done_lines = collections.Counter(
        int(match) for text in logs.values() for match in DONE_LINE.findall(text)
    )
    per_worker = {name: len(DONE_LINE.findall(text)) for name, text in logs.items()}
    # Said by whichever process looked first: the API's, or a worker's.
    logs_with_api = [*logs.values(), podman("logs", f"{PROJECT}_api_1")]
    rescued = sum(text.count("queued again after an interruption") for text in logs_with_api)
    say(f"every run ended in {elapsed:.1f} s: {dict(statuses)}")
    say(f"'done' log lines per worker container: {per_worker}")
    say(f"runs done more than once: {sorted(i for i, n in done_lines.items() if n > 1)}")
    say(f"runs with a second attempt: {again}; rescue log lines: {rescued}")
    states = podman("ps", "-a", "--format", "{{.Names}}: {{.State}}").splitlines()
    say(f"containers now: {', '.join(states)}")
    failures = []
    if statuses != {"done": RUNS} or len(rows) != RUNS:
        failures.append(f"not every run done: {dict(statuses)}")
    if sorted(done_lines) != sorted(ids) or set(done_lines.values()) != {1}:
        failures.append("not every run done exactly once by the workers' logs")
    if not set(cut) <= set(again) or rescued < len(cut):
        failures.append(f"the killed worker's runs {cut} were not all run again")
    if failures:
        raise SystemExit("compose-check: FAILED: " + "; ".join(failures))
    say(f"PASSED: {RUNS} runs, each done once; the killed worker's {len(cut)} run(s) rescued")


if __name__ == "__main__":
    main()
