"""The curated monthly and daily histories in Spark: one Parquet folder per upload and granularity,
the live ones named by the ledger (salesflow.sales.ledger).

    <warehouse>/curated/monthly/source_sha256=<part>/part-*.parquet   store, product, year, month, qty
    <warehouse>/curated/daily/source_sha256=<part>/part-*.parquet     store, product, date, qty

A folder appears by renaming a complete hidden one and is read only once the ledger names it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from salesflow.config import Settings
from salesflow.sales import ledger
from salesflow.spark.transforms import KEYS, aggregate_daily, aggregate_monthly

__all__ = ["curated_path", "monthly_of", "read_history", "read_parts", "write_part"]

_CURATED_SCHEMA = StructType(
    [
        StructField("store_id", StringType()),
        StructField("product_id", StringType()),
        StructField("year", IntegerType()),
        StructField("month", IntegerType()),
        StructField("quantity", DoubleType()),
        StructField("source_sha256", StringType()),
    ]
)
_DAILY_SCHEMA = StructType(
    [
        StructField("store_id", StringType()),
        StructField("product_id", StringType()),
        StructField("date", DateType()),
        StructField("quantity", DoubleType()),
        StructField("source_sha256", StringType()),
    ]
)


def curated_path(settings: Settings, granularity: str = "month") -> Path:
    """The curated monthly (or daily) history: one folder per upload, named by the ledger."""
    return settings.warehouse_path / "curated" / ("daily" if granularity == "day" else "monthly")


def write_part(curated: Path, grain: str, rows: DataFrame, sha256: str) -> str:
    """Write one upload's rows of a granularity as a new folder (complete before it is renamed
    into place, still unread until the ledger names it); its name."""
    root = curated / ledger.GRAIN_FOLDERS[grain]
    root.mkdir(parents=True, exist_ok=True)
    name = ledger.new_part(root, sha256)
    tmp = root / f".tmp-{secrets.token_hex(8)}"  # dot: invisible to readers
    try:
        rows.coalesce(1).write.parquet(str(tmp))
        os.rename(tmp, ledger.part_path(curated, grain, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def read_parts(spark: SparkSession, root: Path, granularity: str = "month") -> DataFrame:
    """The live rows of a granularity as stored, with `source_sha256` naming each row's folder."""
    schema = _DAILY_SCHEMA if granularity == "day" else _CURATED_SCHEMA
    folders = [str(f) for f in ledger.live_folders(root)]
    if not folders:
        return spark.createDataFrame([], schema)
    return spark.read.option("basePath", str(root)).schema(schema).parquet(*folders)


def read_history(spark: SparkSession, root: Path, granularity: str = "month") -> DataFrame:
    """The whole live curated history summed per store/product/month (or date), checkpointed."""
    parts = read_parts(spark, root, granularity)
    if granularity == "day":
        return parts.transform(aggregate_daily).localCheckpoint()
    return parts.transform(aggregate_monthly).localCheckpoint()


def monthly_of(daily: DataFrame) -> DataFrame:
    """Rows per store, product and day summed per month (an upload's rows left after a replace)."""
    return (
        daily.withColumn("year", F.year("date"))
        .withColumn("month", F.month("date"))
        .groupBy(*KEYS)
        .agg(F.sum("quantity").alias("quantity"))
    )
