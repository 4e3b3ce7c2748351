"""gzip around a result compressed once: any prefix and suffix, checked by Python's gzip."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

import kernel
from service.compression import accepts_gzip, crc32_combine, gzip_parts
from service.models import Deflated


@pytest.mark.parametrize("size", [0, 1, 255, 65_537, 3_000_000])
def test_crc32_combine_matches_the_crc_of_the_whole(size: int) -> None:
    head, tail = os.urandom(37), os.urandom(size)
    assert crc32_combine(zlib.crc32(head), zlib.crc32(tail), size) == zlib.crc32(head + tail)


@pytest.mark.parametrize("body", [b"", b"[]", os.urandom(70_000), b'{"a":1},' * 50_000])
def test_spliced_gzip_decompresses_to_prefix_body_suffix(body: bytes) -> None:
    deflated = Deflated((kernel.deflate_for_splicing(body),), zlib.crc32(body), len(body))
    prefix, suffix = b'{"id": 7, "result": ', b"}"
    assert gzip.decompress(b"".join(gzip_parts(prefix, deflated, suffix))) == prefix + body + suffix


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("identity", False),
        ("", False),
        ("br, deflate", False),
    ],
)
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted
