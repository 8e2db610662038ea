"""Spark splits a CSV without quoted line breaks across tasks, and reads one with them whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from salesflow.sales.contract import check_header
from salesflow.spark.read import read_sales

pytestmark = pytest.mark.slow

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
ROWS = 2_000
#: Small enough that the ~100 KB test file spans several input splits.
SPLIT_BYTES = "16k"


@pytest.fixture
def small_splits(spark: SparkSession) -> Iterator[None]:
    key = "spark.sql.files.maxPartitionBytes"
    before = spark.conf.get(key)
    spark.conf.set(key, SPLIT_BYTES)
    try:
        yield
    finally:
        spark.conf.set(key, before)


def _write(path: Path, quoted_break: bool) -> Path:
    name = '"Big\nTV"' if quoted_break else '"Big, ""new"" TV"'
    lines = [f"p{i},{name},3,s{i % 7},Shop,{i},2020-01-02\n" for i in range(ROWS)]
    path.write_text(HEADER + "".join(lines), newline="")
    return path


@pytest.mark.usefixtures("small_splits")
@pytest.mark.parametrize("quoted_break", [False, True])
def test_rows_are_the_same_whether_split_or_not(
    spark: SparkSession, tmp_path: Path, quoted_break: bool
) -> None:
    path = _write(tmp_path / "sales.csv", quoted_break)
    frame = read_sales(spark, str(path), check_header(path.read_bytes()))
    rows = frame.collect()
    assert len(rows) == ROWS
    assert sorted(int(r["quantity"]) for r in rows) == list(range(ROWS))
    assert {r["product_name"] for r in rows} == {"Big\nTV" if quoted_break else 'Big, "new" TV'}
    # multiLine reads a file in one task; without quoted line breaks it is split.
    partitions = frame.rdd.getNumPartitions()
    assert (partitions == 1) if quoted_break else (partitions > 1)
