"""The Spark reader agrees with the upload preview on awkward but valid CSV (quotes, line breaks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from salesflow.sales.contract import check_header
from salesflow.spark.read import read_sales

pytestmark = pytest.mark.slow

AWKWARD = (
    "product_id,product_name,product_price,store_id,store_name,quantity,date\r\n"
    'p1,"Big, ""new""\nTV",3,s1,"Shop\nA",5,2020-01-02\r\n'
    "p2,x,3,s1,y,7,2020-02-02\r\n"
)


def test_quoted_commas_quotes_and_line_breaks_stay_in_their_field(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "awkward.csv"
    path.write_text(AWKWARD, newline="")
    rows = read_sales(spark, str(path), check_header(path.read_bytes())).collect()
    assert [r.asDict() for r in rows] == [
        {
            "product_id": "p1",
            "product_name": 'Big, "new"\nTV',
            "product_price": "3",
            "store_id": "s1",
            "store_name": "Shop\nA",
            "quantity": "5",
            "date": "2020-01-02",
        },
        {
            "product_id": "p2",
            "product_name": "x",
            "product_price": "3",
            "store_id": "s1",
            "store_name": "y",
            "quantity": "7",
            "date": "2020-02-02",
        },
    ]


def test_without_multiline_a_line_break_splits_the_row(spark: SparkSession, tmp_path: Path) -> None:
    """Why the setting defaults to multiline: without it the same file yields broken rows."""
    path = tmp_path / "awkward.csv"
    path.write_text(AWKWARD, newline="")
    rows = read_sales(spark, str(path), check_header(path.read_bytes()), multiline=False).collect()
    assert len(rows) > 2
