"""The documents stay findable: every relative link in the README and docs/ reaches a file,
and every anchor it names is a heading of that file."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, wait_until_up

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*$")


def prose(path: Path) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(path):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            anchor, n = base, 0
            while anchor in found:  # a repeated heading gets -1, -2...
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for line in prose(path)
        for target in LINK.findall(line)
        if not re.match(r"[a-z]+:", target)
    ]


def test_every_document_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for target in relative_links(ROOT / "README.md")}
    assert {f"docs/{doc.name}" for doc in DOCUMENTS[1:]} <= linked


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve_to_files_and_headings(document: Path) -> None:
    links = relative_links(document)
    for target in links:
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        assert linked.is_file(), f"{document.name}: {target} is no file"
        if anchor:
            assert anchor in anchors(linked), f"{document.name}: {target} names no heading"


def test_each_document_starts_with_what_it_covers_under_its_one_title() -> None:
    for document in DOCUMENTS:
        titles = [line for line in prose(document) if line.startswith("# ")]
        assert len(titles) == 1, f"{document.name}: {titles}"
    for document in DOCUMENTS[1:]:
        lines = document.read_text().splitlines()
        assert lines[0].startswith("# ")
        assert lines[2].startswith("This document covers"), document.name


def test_the_readme_stays_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def tour_commands() -> list[str]:
    """The shell lines of the README's tour of the API, as a reader pastes them."""
    tour = (ROOT / "README.md").read_text().partition("## A tour of the API")[2]
    tour = tour.partition("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)```", tour, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def untracked() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return set(listed.stdout.split())


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="a checkout is what the tour runs in")
async def test_the_readme_tour_run_as_written_leaves_no_new_file_in_the_checkout(
    start_server: Any,
) -> None:
    commands = tour_commands()
    assert any("result.csv" in line for line in commands)
    before = untracked()
    _, base_url = start_server({})
    await wait_until_up(base_url)
    port = base_url.rpartition(":")[2]
    script = "\n".join(commands).replace("localhost:8080", f"localhost:{port}")
    saved = ROOT / "var" / "calculation-1.csv"
    try:
        ran = await asyncio.to_thread(
            subprocess.run, ["bash", "-e", "-c", script], cwd=ROOT, capture_output=True
        )
        assert ran.returncode == 0, ran.stderr
        assert saved.read_text().startswith("date,liquid,oil,water,wct")
    finally:
        saved.unlink(missing_ok=True)
    assert untracked() == before


def python_block(path: Path, heading: str) -> str:
    """The first Python block under a heading, as a reader pastes it."""
    section = path.read_text().partition(heading)[2].partition("\n## ")[0]
    found: str = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    return found


@pytest.mark.parametrize(
    ("document", "heading", "count"),
    [("README.md", "## From Python", 30), ("docs/client.md", "## A sweep in three lines", 200)],
)
async def test_the_python_examples_run_as_written(
    start_server: Any, document: str, heading: str, count: int
) -> None:
    code = python_block(ROOT / document, heading)
    _, base_url = start_server({})
    await wait_until_up(base_url)
    check = f"\nassert len(runs) == {count} and all(run.done for run in runs)\n"
    if "frame" in code:
        check += "assert list(frame.columns) == ['date', 'liquid', 'oil', 'water', 'wct']\n"
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code + check],
        env={**os.environ, "CALCULATIONS_URL": base_url},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
