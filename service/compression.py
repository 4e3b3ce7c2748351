"""gzip answers around a result compressed once: only the few bytes around it are compressed
per request, and the CRC-32 of the whole is combined from the parts' CRCs; and the plain
bytes of what is stored deflated."""

from __future__ import annotations

import functools
import struct
import zlib

import kernel
from service.models import Deflated, Pieces

# No file name, no modification time, unknown OS: the same bytes for the same body.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
CRC32_POLYNOMIAL = 0xEDB88320
# The few bytes around a stored result: fast compression, a 512-byte window and the least
# memory. zlib's defaults (level 6, 32 KiB window, memLevel 8) cost 60 us per stream to
# set up, most of a small run's gzip answer; these cost 2 us, and the bytes are the same few.
AROUND = (1, zlib.DEFLATED, -9, 1)


def gzip_parts(prefix: bytes, body: Deflated, suffix: bytes) -> list[bytes]:
    """A gzip file of prefix + the deflated body + suffix, in parts: the stored deflate
    blocks in the middle untouched, so that they are sent without a copy."""
    head = zlib.compressobj(*AROUND)
    start = head.compress(prefix) + head.flush(zlib.Z_SYNC_FLUSH)
    tail = zlib.compressobj(*AROUND)
    end = tail.compress(suffix) + tail.flush(zlib.Z_FINISH)
    crc = crc32_combine(
        crc32_combine(zlib.crc32(prefix), body.crc, body.size), zlib.crc32(suffix), len(suffix)
    )
    size = (len(prefix) + body.size + len(suffix)) & 0xFFFFFFFF
    return [GZIP_HEADER + start, *body.data, end + struct.pack("<II", crc, size)]


def inflate(pieces: Pieces, piece: int) -> Pieces:
    """What raw deflate blocks (a finished stream, or blocks ending on a sync flush) hold, in
    pieces of at most `piece` bytes. Stored results are deflated: this is a plain answer."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = []
    for data in pieces:
        while data:
            out.append(inflater.decompress(data, piece))
            data = inflater.unconsumed_tail
    out.append(inflater.flush())  # what a long match left to copy after the last input
    return tuple(chunk for chunk in out if chunk)


def csv_of(deflated: Pieces, piece: int) -> Pieces:
    """The CSV of a result stored as its deflated JSON: the CSV is not stored."""
    return tuple(kernel.csv_of_records_json(inflate(deflated, piece)))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _quality(q[2:]) == 0)
    return False


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc(A), crc(B) and len(B), as zlib's crc32_combine: crc1 is
    advanced over len2 zero bytes by the operator matrices of the powers of two in len2."""
    for bit in range(len2.bit_length()):
        if len2 >> bit & 1:
            crc1 = _times(_zeros_operator(bit), crc1)
    return crc1 ^ crc2


def _times(matrix: tuple[int, ...], vector: int) -> int:
    result, row = 0, 0
    while vector:
        if vector & 1:
            result ^= matrix[row]
        vector >>= 1
        row += 1
    return result


@functools.cache
def _zeros_operator(power: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC over 2**power zero bytes."""
    if power == 0:
        one_bit = (CRC32_POLYNOMIAL, *(1 << n for n in range(31)))
        matrix = one_bit
        for _ in range(3):  # one bit squared three times: eight bits, one byte
            matrix = _square(matrix)
        return matrix
    return _square(_zeros_operator(power - 1))


def _square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_times(matrix, column) for column in matrix)
