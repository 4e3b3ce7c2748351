"""The progress bar of `map` and of `calculations wait`: tqdm's when the `progress` extra is
installed, else one line of text; shown only on a terminal or in a notebook."""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol, TextIO


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


class Quiet:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Line:
    """`runs ended: 37/200`, rewritten in place."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.count, self.stream = total, 0, stream
        self.lock = threading.Lock()
        self.show()

    def show(self) -> None:
        self.stream.write(f"\rruns ended: {self.count}/{self.total}")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.count += n
            self.show()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def watched(stream: TextIO) -> bool:
    """A person can see it: a terminal, or a notebook's kernel (its stderr is no terminal)."""
    return stream.isatty() or "ipykernel" in sys.modules


def bar(total: int, enabled: bool, stream: TextIO | None = None) -> Bar:
    stream = stream or sys.stderr
    if not enabled or not watched(stream):
        return Quiet()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return Line(total, stream)
    shown: Bar = tqdm(total=total, unit="run", desc="runs ended", file=stream)
    return shown
