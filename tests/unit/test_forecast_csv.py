"""The in-process reading of a prediction CSV: the Spark predict path's rules, in plain Python.

(The row-for-row agreement with Spark is in tests/integration/test_forecasts.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.errors import HeaderError
from salesflow.serving.predict_csv import escape_formula_text, read_monthly

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_rows_are_validated_and_summed_per_store_product_month(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "x.csv",
        HEADER
        + "p1,a,1, s1 ,b,3,2022-01-05\n"
        + "p1,a,1,s1,b,4.5,2022-01-31 23:59:59\n"  # same month: summed
        + "p1,a,1,s1,b,abc,2022-02-01\n"  # bad quantity: kept, no actual
        + "p1,a,1,s1,b,-2,2022-02-03\n"  # negative: kept, no actual
        + "p2,a,1,s1,b,0x1p3,2022-03-01\n"  # a hex float, as Java parses it
        + 'p2,"x, ""y""\nz",1,s1,b,1,2022-03-09\n'  # RFC 4180 quoting, a quoted line break
        + "\n"  # blank line: skipped
        + "p1,a,1,,b,3,2022-01-05\n"  # missing store
        + "\t,a,1,s1,b,3,2022-01-05\n"  # blank product
        + "p1,a,1,s1,b,3,2022-02-30\n"  # no such day
        + "p1,a,1,s1\n",  # short line: no date
        bom=True,
    )
    monthly = read_monthly(source)
    assert monthly.keys == [("s1", "p1", 2022, 1), ("s1", "p1", 2022, 2), ("s1", "p2", 2022, 3)]
    assert monthly.actual == [7.5, None, 9.0]
    assert monthly.rows_read == 10
    assert monthly.dropped == {"missing_store_id": 1, "missing_product_id": 1, "bad_date": 2}


def test_no_quantity_column_and_other_delimiters(tmp_path: Path) -> None:
    text = "store_id;date;product_id;product_name;product_price;store_name;extra\n"
    text += "s1;2022-05-01;p1;a;1;b;x;y\ns2;2022-05-09;p1;a;1;b;x\n"  # a long line loses extras
    monthly = read_monthly(_write(tmp_path / "x.csv", text))
    assert monthly.keys == [("s1", "p1", 2022, 5), ("s2", "p1", 2022, 5)]
    assert monthly.actual == [None, None] and monthly.dropped == {}


def test_a_wrong_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="missing column"):
        read_monthly(_write(tmp_path / "x.csv", "store_id,product_id\ns1,p1\n"))


@pytest.mark.parametrize(
    ("value", "escaped"),
    [("=SUM(A1)", "'=SUM(A1)"), ("@x", "'@x"), ("-3", "-3"), ("-1.5", "-1.5"), ("s1", "s1")],
)
def test_formula_text_is_escaped(value: str, escaped: str) -> None:
    assert escape_formula_text(value) == escaped
