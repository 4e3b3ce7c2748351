"""The kernel: shape, the reference model, reproducibility, the whole calendar, strict JSON."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

import kernel
from tests.conftest import imported_of


def test_columns_and_dates_follow_the_lag_up_to_and_including_date_fin() -> None:
    frame = kernel.calculate(date(2024, 1, 1), date(2024, 1, 29), 7, seed=1)
    assert tuple(frame.columns) == kernel.COLUMNS
    days = frame["date"].dt.strftime("%Y-%m-%d").tolist()
    assert days == ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29"]


def test_same_seed_same_table_other_seed_other_table() -> None:
    args = (date(2020, 1, 1), date(2020, 12, 31), 3)
    first = kernel.run(*args, seed=42).json
    assert kernel.run(*args, seed=42).json == first
    assert kernel.run(*args, seed=43).json != first


@pytest.mark.parametrize("seed", range(20))
def test_reference_model_holds(seed: int) -> None:
    frame = kernel.calculate(date(2000, 1, 1), date(2002, 12, 31), 1, seed=seed)
    assert (frame["liquid"] >= 0).all()
    assert (frame["oil"] >= 0).all()
    assert (frame["oil"] <= frame["liquid"]).all()
    assert ((frame["water"] - (frame["liquid"] - frame["oil"])).abs() < 1e-9).all()
    positive = frame["liquid"] > 0
    wct = frame["water"][positive] / frame["liquid"][positive]
    assert ((frame["wct"][positive] - wct).abs() < 1e-5).all()
    # The level rises by level//10 after the first third and falls by level//5 after the second.
    n = len(frame)
    thirds = [frame["liquid"][i * n // 3 : (i + 1) * n // 3].mean() for i in range(3)]
    assert thirds[1] >= thirds[0]
    assert thirds[2] < thirds[1]
    assert 5 * 0.8 < thirds[0] < 105 * 1.2
    # Oil declines from about 0.9 of the level to about 0.2 of it.
    assert frame["oil"][: n // 10].mean() > frame["oil"][-n // 10 :].mean()


def test_whole_calendar_works_beyond_pandas_nanosecond_range() -> None:
    records = json.loads(kernel.run(date(1, 1, 1), date(9999, 12, 31), 36500, seed=3).json)
    assert records[0]["date"] == "0001-01-01"
    assert records[-1]["date"] == "9994-05-13"
    last = json.loads(kernel.run(date(9999, 12, 30), date(9999, 12, 31), 1, seed=3).json)
    assert [r["date"] for r in last] == ["9999-12-30", "9999-12-31"]


def test_single_point_when_lag_exceeds_the_period() -> None:
    records = json.loads(kernel.run(date(2024, 5, 1), date(2024, 5, 3), 30, seed=0).json)
    assert [r["date"] for r in records] == ["2024-05-01"]


def test_json_is_strict_dates_are_plain_and_values_are_numbers() -> None:
    text = kernel.run(date(1999, 12, 25), date(2000, 1, 10), 2, seed=9).json
    # A strict parser: NaN and Infinity are not JSON.
    records = json.loads(text, parse_constant=pytest.fail)
    assert [r["date"] for r in records][:3] == ["1999-12-25", "1999-12-27", "1999-12-29"]
    for row in records:
        assert list(row) == list(kernel.COLUMNS)
        assert all(isinstance(row[c], float) for c in kernel.COLUMNS[1:])


def test_wct_is_null_where_liquid_is_zero() -> None:
    liquid = np.array([0.0, 50.0, 0.0])
    water = np.array([0.0, 10.0, 0.0])
    wct = kernel.water_cut(liquid, water)
    assert wct[1] == 0.2
    frame = pd.DataFrame(
        {
            "date": np.array(["2024-01-01", "2024-01-02", "2024-01-03"], "datetime64[s]"),
            "liquid": liquid,
            "oil": liquid - water,
            "water": water,
            "wct": wct,
        }
    )
    records = json.loads(
        kernel.to_records_json(kernel.columns_of(frame)), parse_constant=pytest.fail
    )
    assert [r["wct"] for r in records] == [None, 0.2, None]


@pytest.mark.parametrize(
    ("start", "fin", "lag", "message"),
    [
        (date(2024, 1, 1), date(2024, 2, 1), 0, "lag must be at least 1 day, got 0"),
        (date(2024, 2, 1), date(2024, 1, 1), 1, "precedes"),
    ],
)
def test_bad_arguments_raise_a_readable_value_error(
    start: date, fin: date, lag: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        kernel.calculate(start, fin, lag, seed=0)


def csv_text(data: bytes, piece: int = 1 << 20) -> str:
    """The CSV made from this JSON, given in pieces of `piece` bytes."""
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)]
    return b"".join(kernel.csv_of_records_json(pieces)).decode()


def test_csv_has_the_same_rows_as_the_json() -> None:
    output = kernel.run(date(2024, 1, 1), date(2024, 3, 1), 10, seed=5)
    lines = csv_text(output.json).splitlines()
    assert lines[0] == "date,liquid,oil,water,wct"
    records = json.loads(output.json)
    assert len(lines) == len(records) + 1
    for line, record in zip(lines[1:], records, strict=True):
        day, *numbers = line.split(",")
        assert day == record["date"]
        assert [float(n) for n in numbers] == [record[c] for c in kernel.COLUMNS[1:]]


def test_csv_leaves_wct_empty_where_liquid_is_zero() -> None:
    frame = pd.DataFrame(
        {
            "date": np.array(["2024-01-01"], "datetime64[s]"),
            "liquid": [0.0],
            "oil": [0.0],
            "water": [0.0],
            "wct": [np.nan],
        }
    )
    data = kernel.to_records_json(kernel.columns_of(frame))
    assert csv_text(data) == "date,liquid,oil,water,wct\r\n2024-01-01,0.0,0.0,0.0,\r\n"


@pytest.mark.parametrize("piece", [1, 2, 7, 64, 4096])
def test_csv_is_the_same_whatever_pieces_the_json_comes_in(piece: int) -> None:
    output = kernel.run(date(2023, 12, 1), date(2024, 2, 1), 3, seed=11)
    whole = csv_text(output.json)
    assert csv_text(output.json, piece) == whole
    assert whole.count("\r\n") == len(json.loads(output.json)) + 1


@pytest.mark.parametrize(
    ("modules", "unwanted"),
    [
        # A kernel process: it starts after every cancel and time limit, so it starts light.
        ("service.worker, service.db.sqlite, service.db.postgres",
         {"aiohttp", "aiohttp_apigami", "marshmallow", "prometheus_client", "multidict"}),
        # The server: pandas and numpy stay in the kernel processes.
        ("service.app, service.__main__", {"pandas", "numpy"}),
    ],
)  # fmt: skip
def test_each_kind_of_process_imports_only_what_it_needs(modules: str, unwanted: set[str]) -> None:
    assert imported_of(modules, unwanted) == []
