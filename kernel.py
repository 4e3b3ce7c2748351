"""The calculation: a synthetic production profile of one oil well, and its JSON form.

Pure and re-runnable: the same arguments always give the same table. Kernel processes
(`service/worker.py`) run `run`; the server process never imports pandas or numpy.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    import pandas as pd

COLUMNS = ("date", "liquid", "oil", "water", "wct")
LIQUID_NOISE = 0.05  # relative standard deviation of the liquid rate around its level
OIL_NOISE = 0.03


def calculate(date_start: date, date_fin: date, lag: int, seed: int) -> pd.DataFrame:
    """Profile of one well at date_start, date_start + lag, ... up to and including date_fin.

    liquid is a noisy level (drawn in 5..105) that rises by level // 10 after the first
    third of the period and falls by level // 5 after the second; oil declines linearly from
    0.9 * level to 0.2 * level plus noise, never above liquid; water = liquid - oil;
    wct = water / liquid, null where liquid is 0.
    """
    import numpy as np
    import pandas as pd

    if lag < 1:
        raise ValueError(f"lag must be at least 1 day, got {lag}")
    if date_fin < date_start:
        raise ValueError(f"date_fin {date_fin} precedes date_start {date_start}")
    rng = np.random.default_rng(seed)
    # Days since 0001-01-01 as datetime64[D]: every calendar date fits, unlike pandas' nanoseconds.
    first = np.datetime64(date_start, "D")
    dates = np.arange(first, np.datetime64(date_fin, "D") + 1, lag)
    n = len(dates)
    third = np.arange(n) * 3 // n  # 0, 1, 2 for the three thirds of the rows

    level = int(rng.integers(5, 106))
    step = np.select([third == 1, third == 2], [level // 10, level // 10 - level // 5], 0)
    liquid = np.clip(level + step + rng.normal(0.0, LIQUID_NOISE * level, n), 0.0, None)
    decline = np.linspace(0.9 * level, 0.2 * level, n)
    oil = np.clip(decline + rng.normal(0.0, OIL_NOISE * level, n), 0.0, liquid)
    liquid, oil = liquid.round(3), oil.round(3)
    water = (liquid - oil).round(3)
    return pd.DataFrame(
        {
            "date": dates.astype("datetime64[s]"),
            "liquid": liquid,
            "oil": oil,
            "water": water,
            "wct": water_cut(liquid, water),
        }
    )


def water_cut(liquid: np.ndarray[Any, Any], water: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """water / liquid, rounded; NaN (null in JSON) where there is no liquid to divide by."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(liquid > 0, (water / liquid).round(6), np.nan)


class Output(NamedTuple):
    """A result in the forms it is stored and served in, made once in the worker process.

    `deflated` is `json` as raw deflate blocks ending on a sync flush (byte-aligned, not
    final), with `crc` the CRC-32 of `json`: the server splices it between blocks of its own
    to answer gzip without compressing the result again.
    """

    json: bytes
    deflated: bytes
    crc: int


def columns_of(frame: pd.DataFrame) -> list[list[Any]]:
    """The frame as plain Python columns: dates as YYYY-MM-DD, NaN as None."""
    days = frame["date"].to_numpy().astype("datetime64[D]").astype(str)
    columns: list[list[Any]] = [days.tolist()]
    for name in COLUMNS[1:]:
        columns.append([None if math.isnan(v) else v for v in frame[name].tolist()])
    return columns


def to_records_json(columns: list[list[Any]]) -> bytes:
    """Strict JSON in UTF-8 of `columns_of(frame)`: a list of {date, liquid, oil, water, wct}."""
    rows = zip(*columns, strict=True)
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    return json.dumps(records, allow_nan=False, separators=(",", ":")).encode()


def deflate_for_splicing(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


CSV_HEADER = ",".join(COLUMNS).encode() + b"\r\n"
# What turns the JSON of one row into its CSV line, in order: the keys go, null becomes an
# empty cell, and the numbers stay the text they are in the JSON.
JSON_TO_CSV = (
    (b'{"date":"', b""),
    (b'","liquid":', b","),
    (b',"oil":', b","),
    (b',"water":', b","),
    (b',"wct":', b","),
    (b"null", b""),
    (b"}", b"\r\n"),
)


def csv_of_records_json(pieces: Iterable[bytes]) -> list[bytes]:
    """The CSV of `to_records_json`'s text, given in pieces, a piece of CSV for each: rows
    cut by a piece's end wait for the next. The CSV is not stored: it is made again from
    the JSON each time it is asked for, which is what `to_records_json` wrote."""
    out, pending = [CSV_HEADER], b""
    for piece in pieces:
        text = pending + piece
        end = text.rfind(b"}") + 1  # after the last whole row
        pending = text[end:]
        out.append(csv_lines(text[:end]))
    return out


def csv_lines(rows: bytes) -> bytes:
    """`{...},{...}` rows of the JSON (the list's brackets and commas between rows left
    out too) as CSV lines."""
    rows = rows.lstrip(b"[,").replace(b"},{", b"}{")
    for old, new in JSON_TO_CSV:
        rows = rows.replace(old, new)
    return rows


def run(date_start: date, date_fin: date, lag: int, seed: int, delay: float = 0.0) -> Output:
    """What the pool runs: the calculation, after `delay` seconds that stand for a long one."""
    if delay > 0:
        time.sleep(delay)
    columns = columns_of(calculate(date_start, date_fin, lag, seed))  # once, for both forms
    data = to_records_json(columns)
    return Output(json=data, deflated=deflate_for_splicing(data), crc=zlib.crc32(data))
