"""The curated monthly and daily histories: one Parquet partition per source file, added once per
checksum.

    <warehouse>/curated/monthly/source_sha256=<sha>/part-*.parquet   store, product, year, month, qty
    <warehouse>/curated/monthly/source_sha256=<sha>/_source.json     the source's manifest
    <warehouse>/curated/daily/source_sha256=<sha>/part-*.parquet     store, product, date, qty

A partition appears by renaming a complete hidden folder, so readers never see half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from salesflow.config import Settings
from salesflow.spark.transforms import aggregate_daily, aggregate_monthly

__all__ = ["append_curated", "curated_path", "manifests", "read_history"]

_MANIFEST = "_source.json"  # Spark's Parquet reader skips names starting with "_"
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
    """The curated monthly (or daily) history: Parquet partitioned by the source file's sha256."""
    return settings.warehouse_path / "curated" / ("daily" if granularity == "day" else "monthly")


def append_curated(root: Path, monthly: DataFrame, stats: dict[str, Any]) -> bool:
    """Add one source's monthly (or daily) rows as partition source_sha256=<sha>; False if there."""
    partition = root / f"source_sha256={stats['sha256']}"
    if partition.exists():
        return False
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{secrets.token_hex(8)}"  # dot: invisible to Spark's partition discovery
    try:
        monthly.coalesce(1).write.parquet(str(tmp))
        manifest = {**stats, "added_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, partition)
        except OSError:
            if partition.exists():  # another run added the same file meanwhile
                return False
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def manifests(root: Path) -> list[dict[str, Any]]:
    """The manifest of every source in the curated history (what each partition was made from)."""
    if not root.is_dir():
        return []
    found = []
    for manifest in sorted(root.glob(f"source_sha256=*/{_MANIFEST}")):
        found.append(json.loads(manifest.read_text(encoding="utf-8")))
    return found


def read_history(spark: SparkSession, root: Path, granularity: str = "month") -> DataFrame:
    """The whole curated history summed per store/product/month (or date), checkpointed."""
    if granularity == "day":
        daily = spark.read.schema(_DAILY_SCHEMA).parquet(str(root))
        return daily.transform(aggregate_daily).localCheckpoint()
    curated = spark.read.schema(_CURATED_SCHEMA).parquet(str(root))
    return curated.transform(aggregate_monthly).localCheckpoint()
