"""Load: wrk runs read back from their Lua summary, and small helpers for our own client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
from dataclasses import dataclass

from bench.procs import ROOT
from bench.report import ERROR, FAIL, Row

SCRIPT = ROOT / "bench" / "wrk" / "load.lua"
MARKER = "BENCH_WRK "


class WrkFailed(RuntimeError):
    """wrk did not run or printed no summary."""


@dataclass
class WrkResult:
    requests: int
    seconds: float  # the measured window
    rps: float
    statuses: dict[int, int]
    errors: dict[str, int]  # socket errors, and `status`: answers that are not 2xx or 3xx

    def count(self, low: int, high: int) -> int:
        return sum(n for status, n in self.statuses.items() if low <= status < high)

    def socket_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind != "status")

    def describe(self) -> str:
        """The errors, in a few words, for a row's note ('' when there are none)."""
        parts = [f"{n} {kind} errors" for kind, n in self.errors.items() if n and kind != "status"]
        if self.errors.get("status"):
            parts.append(f"{self.errors['status']} answers not 2xx/3xx")
        return ", ".join(parts)


def checked(row: Row, ours: WrkResult, ceiling: WrkResult | None = None) -> Row:
    """The row, failed if our server answered errors under the load, and an error if the
    ceiling did (then the harness is wrong, not the server)."""
    if ceiling is not None and (ceiling.errors.get("status") or ceiling.socket_errors()):
        return row.invalidate(ERROR, f"the ceiling's load had {ceiling.describe()}")
    if ours.errors.get("status") or ours.socket_errors():
        return row.invalidate(FAIL, f"our load had {ours.describe()}")
    return row


def wrk_argv(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    headers: tuple[str, ...] = (),
    script_args: tuple[str, ...] = (),
) -> list[str]:
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s"]
    argv += ["--timeout", "10s", "-s", str(SCRIPT)]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url, "--", *script_args]


async def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    headers: tuple[str, ...] = (),
    method: str | None = None,
    body: str | None = None,
    statuses: bool = False,
    tail: int | None = None,
) -> WrkResult:
    """wrk against `url` for `seconds`. With `tail`, no request starts after `seconds`, and wrk
    runs `tail` more seconds so that every request sent is answered (exact status counts)."""
    args = [f"method={method}"] if method else []
    if body is not None:
        args.append(f"body={body}")
    if statuses:
        args.append("statuses=1")
    if tail is not None:
        args.append(f"window_ms={seconds * 1000}")
    argv = wrk_argv(
        url,
        connections=connections,
        seconds=seconds + (tail or 0),
        threads=threads,
        headers=headers,
        script_args=tuple(args),
    )
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(seconds + (tail or 0) + 30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return parse(out.decode(errors="replace"), err.decode(errors="replace"), seconds, tail)


async def start_wrk(url: str, *, connections: int, seconds: int) -> asyncio.subprocess.Process:
    """wrk in the background, for at most `seconds`; `stop_wrk` ends it earlier."""
    argv = wrk_argv(url, connections=connections, seconds=seconds, threads=1)
    return await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def stop_wrk(proc: asyncio.subprocess.Process) -> WrkResult:
    """SIGINT (wrk then prints its summary as at the end of -d), and its result."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return parse(out.decode(errors="replace"), err.decode(errors="replace"), 0, None)


def parse(stdout: str, stderr: str, seconds: int, tail: int | None) -> WrkResult:
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise WrkFailed(f"wrk printed no summary: {(stderr or stdout).strip()[-500:]}")
    raw = json.loads(lines[-1][len(MARKER) :])
    if tail is None:
        window, requests = raw["duration_us"] / 1e6, raw["requests"]
    else:
        window, requests = float(seconds), raw["in_window"]
    return WrkResult(
        requests=raw["requests"],
        seconds=window,
        rps=requests / window if window else 0.0,
        statuses={int(status): n for status, n in raw["statuses"].items()},
        errors=raw["errors"],
    )


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
