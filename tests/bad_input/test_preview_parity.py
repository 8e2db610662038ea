"""The preview's reject reasons agree with the Spark job's, value by value, on awkward values.

Each row carries a tag in product_name; the preview judges each row alone (so every reason is
seen), Spark judges them all in one file with `transforms.rejected_rows`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from salesflow.sales.contract import check_header
from salesflow.sales.preview import Inspector
from salesflow.spark.read import read_sales
from salesflow.spark.transforms import rejected_rows
from tests.bad_input.helpers import HEADER, row

QUANTITIES = [
    "3", " 3 ", "3\t", "1.5", ".5", "5.", "1e3", "1E-3", "2d", "2F", "0x1p3", "0x10", "-0", "+4",
    "", " ", "-1", "-0.5", "NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "1_000", "abc",
    "\u0663", "1e", "e3", "++1", "1.2.3",
]  # fmt: skip
DATES = [
    "2024-01-05", " 2024-01-05 ", "2024-01-05 23:59:59", "2024-01-05 24:00:00", "2024-02-29",
    "2023-02-29", "2024-1-5", "2024-01-5", "05/01/2024", "2024-01-05T10:00:00", "2024-01-05 10:00",
    "20240105", "0000-01-01", "9999-12-31", "2024-13-01", "2024-00-10", "", "2024-01-05 1:02:03",
    "2024-01-05 10:00:00.5", "+2024-01-05", "12024-01-05",
]  # fmt: skip
IDS = [("7", "1"), ("", "1"), (" ", "1"), ("7", ""), ("7", "\t"), ("", "")]


def cases() -> list[bytes]:
    """Rows tagged t0, t1, ... in product_name."""
    values = [{"quantity": q} for q in QUANTITIES] + [{"date": d} for d in DATES]
    values += [{"store": s, "product": p, "quantity": "x"} for s, p in IDS]
    return [row(name=f"t{i}", **v) for i, v in enumerate(values)]  # type: ignore[arg-type]


def preview_reason(line: bytes) -> str | None:
    content = HEADER + line
    inspector = Inspector(check_header(content), 10**6)
    inspector.feed(content)
    rejected = inspector.finish().rejected
    assert sum(rejected.values()) <= 1
    return next(iter(rejected), None)


@pytest.mark.slow
def test_preview_reasons_match_the_spark_job(spark: SparkSession, tmp_path: Path) -> None:
    lines = cases()
    path = tmp_path / "awkward.csv"
    path.write_bytes(HEADER + b"".join(lines))
    frame = read_sales(spark, str(path), check_header(HEADER)).transform(rejected_rows)
    by_spark = {r["product_name"]: r["reject_reason"] for r in frame.collect()}
    by_preview = {f"t{i}": preview_reason(line) for i, line in enumerate(lines)}
    expected = {tag: by_spark.get(tag) for tag in by_preview}
    assert by_preview == expected
    assert set(expected.values()) >= {  # the cases cover every reason
        None,
        "missing_store_id",
        "missing_product_id",
        "bad_date",
        "missing_quantity",
        "bad_quantity",
        "negative_quantity",
    }
