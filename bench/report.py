"""Result rows, the printed table (Markdown, pasted as it is) and the JSON file with the machine."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PASS, FAIL, INFO, ERROR = "pass", "FAIL", "info", "ERROR"
HEADER = ("figure", "ours", "ceiling", "ratio", "target", "result")
PACKAGES = ("aiohttp", "aiosqlite", "asyncpg", "pandas", "numpy")


@dataclass
class Row:
    """One line of the table. `ratio` is ours / ceiling; `at_least` or `at_most` is its target.
    `result` is pass or FAIL for a target, info for a figure without one, and ERROR when the
    scenario could not be measured at all (a crash, a timeout), never for a missed target."""

    scenario: str
    figure: str
    ours: float | None = None
    ceiling: float | None = None
    unit: str = ""
    ratio: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    percent: bool = True  # the ratio and its target shown as 52%, else as 2.10x
    result: str = INFO
    note: str = ""
    ours_text: str | None = None  # shown instead of the formatted number (checks)
    ceiling_text: str | None = None
    target_text: str | None = None
    cells: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.note = " ".join(self.note.split())  # one line, whatever an error message holds
        self.cells = self.render()

    def invalidate(self, result: str, why: str) -> Row:
        """Mark a figure whose load went wrong: FAIL for ours, ERROR for a ceiling."""
        self.result = result
        self.note = " ".join(f"{why}; {self.note}".split()).rstrip("; ")
        self.cells = self.render()
        return self

    def render(self) -> list[str]:
        return [
            self.figure,
            self.ours_text if self.ours_text is not None else show(self.ours, self.unit),
            self.ceiling_text if self.ceiling_text is not None else show(self.ceiling, self.unit),
            "—" if self.ratio is None else self.show_ratio(self.ratio),
            self.target_text if self.target_text is not None else self.show_target(),
            self.result,
        ]

    def show_ratio(self, value: float) -> str:
        return f"{value:.0%}" if self.percent else f"{value:.2f}x"

    def show_target(self) -> str:
        if self.at_least is not None:
            return "≥ " + self.show_ratio(self.at_least) + " (higher is better)"
        if self.at_most is not None:
            return "≤ " + self.show_ratio(self.at_most) + " (lower is better)"
        return "—"


def ratio_row(
    scenario: str,
    figure: str,
    ours: float,
    ceiling: float,
    unit: str,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    percent: bool = True,
    note: str = "",
) -> Row:
    """A figure beside its ceiling, judged by its ratio."""
    if ceiling <= 0:
        return Row(scenario, figure, ours, ceiling, unit, result=ERROR, note="the ceiling is 0")
    ratio = ours / ceiling
    if at_least is not None:
        result = PASS if ratio >= at_least else FAIL
    elif at_most is not None:
        result = PASS if ratio <= at_most else FAIL
    else:
        result = INFO
    return Row(
        scenario, figure, ours, ceiling, unit, ratio, at_least, at_most, percent, result, note
    )


def check_row(
    scenario: str, figure: str, ok: bool, ours: str, expected: str, target: str, note: str = ""
) -> Row:
    """A yes/no check, shown as text."""
    return Row(
        scenario,
        figure,
        result=PASS if ok else FAIL,
        note=note,
        ours_text=ours,
        ceiling_text=expected,
        target_text=target,
    )


def error_row(scenario: str, message: str) -> Row:
    return Row(scenario, f"{scenario}: could not be measured", result=ERROR, note=message)


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{value / 1024:,.0f} KiB" if value >= 1024 else f"{value:.0f} B"
    if unit in ("ms", "s"):
        return f"{value:,.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, then the notes."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells) + " |" for row in rows]
    notes = [f"- {row.figure}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def parse_table(text: str) -> list[list[str]]:
    """The cells of each row of a table printed by `table` (the test reads stdout with it)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and line.endswith(" |"):
            rows.append([cell.strip() for cell in line[2:-2].split(" | ")])
    return [row for row in rows if tuple(row) != HEADER]


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version(),
    }


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def wrk_version() -> str | None:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else None


def write_json(out_dir: Path, stamp: str, document: dict[str, Any]) -> Path:
    """`<stamp>.json` and `latest.json` in `out_dir`; the path of the first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    path = out_dir / f"{stamp}.json"
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
