"""How the server process gives memory back: glibc's allocator set up once at start, and
trimmed whenever the last large answer in flight has been sent."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to set up, nothing to trim
    _libc = None

TRIM_DELAY = 0.5  # seconds: long enough for the last answer's pieces to have been freed

_sending = 0  # large answers being sent by this process
_timer: asyncio.TimerHandle | None = None


def configure() -> None:
    """Buffers of 256 KiB and more come from mmap, and go back to the system when freed.
    Left alone, glibc raises that threshold after the first large free and keeps later large
    buffers in a heap that does not shrink."""
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, 256 * 1024)


@contextlib.contextmanager
def large_answer() -> Iterator[None]:
    """Around the sending of a large answer. Its pieces come from the heap (under the mmap
    threshold, so that reading them costs no fresh pages), and the heap keeps freed pieces
    for the next answer; TRIM_DELAY after the last large answer in flight, they go back to
    the system, in a thread."""
    global _sending, _timer
    _sending += 1
    try:
        yield
    finally:
        _sending -= 1
        if _sending == 0 and _libc is not None:
            if _timer is not None:
                _timer.cancel()
            _timer = asyncio.get_running_loop().call_later(TRIM_DELAY, _trim_if_quiet)


def _trim_if_quiet() -> None:
    if _sending == 0 and _libc is not None:
        asyncio.get_running_loop().run_in_executor(None, _libc.malloc_trim, 0)
