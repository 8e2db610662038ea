"""The in-process reading of a prediction CSV: the Spark predict path's rules, in plain Python.

(The row-for-row agreement with Spark is in tests/integration/test_forecasts.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.errors import HeaderError, NothingToPredictError
from salesflow.serving.predict_csv import escape_formula_text, read_monthly
from salesflow.serving.prediction_rows import Drops, answer_names, refuse_empty

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


def test_kept_rows_carry_their_fields_first_line_and_month(tmp_path: Path) -> None:
    text = (
        'store_id,date,product_id,,note\ns1,2022-05-01,p1,x,"a\nb"\n\n,2022-05-02,p1\ns1,bad,p2,,\n'
    )
    monthly = read_monthly(_write(tmp_path / "x.csv", text), keep_rows=True)
    assert monthly.columns == ["store_id", "date", "product_id", "_c3", "note"]
    first, second, third = monthly.inputs
    assert first.fields == ["s1", "2022-05-01", "p1", "x", "a\nb"] and first.line == 2
    assert first.key == ("s1", "p1", 2022, 5) and first.reason is None
    assert second.fields == [None, "2022-05-02", "p1", None, None] and second.line == 5
    assert (second.key, second.reason, third.line, third.reason) == (
        None,
        "missing_store_id",
        6,
        "bad_date",
    )
    assert monthly.drops.lines == {"missing_store_id": [5], "bad_date": [6]}


def test_drops_say_why_with_the_first_lines_and_an_empty_file_is_refused() -> None:
    drops = Drops()
    for line in range(2, 10):
        drops.add("bad_date", line)
    drops.add("missing_store_id", 12)
    assert drops.summary() == (
        "bad_date: 8 rows (lines 2, 3, 4, 5, 6, ...); missing_store_id: 1 row (line 12)"
    )
    with pytest.raises(NothingToPredictError, match=r"all 9 rows were dropped.*bad_date: 8 rows"):
        refuse_empty(9, 0, drops)
    with pytest.raises(NothingToPredictError, match="no data rows"):
        refuse_empty(0, 0, Drops())
    refuse_empty(9, 1, drops)  # something left to score


def test_answer_columns_the_input_already_uses_are_prefixed() -> None:
    names = answer_names(["store_id", "period", "basis"], ["0.8"])
    assert names["period"] == "answer_period" and names["basis"] == "answer_basis"
    assert names["predicted_quantity"] == "predicted_quantity"
    assert list(names)[-1] == "dropped_reason" and "store_id" not in names
