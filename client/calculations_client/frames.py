"""A result as a pandas DataFrame; pandas is the `pandas` extra, loaded only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

COLUMNS = ("date", "liquid", "oil", "water", "wct")


def frame_of(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    """`date` as datetime64[s] (every calendar day fits, unlike nanoseconds), the others as
    float64 with NaN where the API says null."""
    try:
        import numpy
        import pandas
    except ImportError as exc:
        raise ImportError(
            "a DataFrame needs pandas: pip install 'calculations-client[pandas]'"
        ) from exc
    frame = pandas.DataFrame.from_records(rows, columns=list(COLUMNS))
    days = numpy.array([row["date"] for row in rows], dtype="datetime64[D]")
    frame["date"] = days.astype("datetime64[s]")
    return frame.astype(dict.fromkeys(COLUMNS[1:], "float64"))
