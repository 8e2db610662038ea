"""The original project's training job, re-created as the benchmark baseline (imports pyspark only).

What the original did, and what this does on purpose: a new JVM per job, Spark's defaults (200
shuffle partitions, no adaptive tuning of our own, default driver memory), the CSV read with
`inferSchema` (an extra full pass over the file), names and price dropped, the date split into
year and month, quantities summed per store/product/year/month and `cache()`d, then the same
pipeline salesflow fits (StringIndexer x2 -> VectorAssembler(month, year, store, product) ->
RandomForestRegressor with Spark's default 20 trees of depth 5), saved to a folder. No validation,
no reject accounting, no holdout evaluation: salesflow's job does all three on top, so the ratio
against it is conservative.

    python bench/seed_style_job.py SALES.csv MODEL_DIR [--sep ,]

`read_sales`, `monthly_sales` and `seed_pipeline` are the job's pieces; the accuracy benchmark
fits the same pipeline on its training months and scores the held-out ones with it.

Prints one JSON line on stdout: {"timings": {stage: seconds}, "rows_aggregated": n}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from pyspark.ml import Pipeline
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import RandomForestRegressor
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

#: The seed used by salesflow's default settings, so both jobs grow the same kind of forest.
SEED = 42


def read_sales(spark: SparkSession, path: str, sep: str = ",") -> DataFrame:
    """The sales CSV as the original read it: header, every column's type inferred."""
    return spark.read.option("header", "true").option("inferSchema", "true").csv(path, sep=sep)


def monthly_sales(sales: DataFrame) -> DataFrame:
    """Names and price dropped, quantities summed per store/product/year/month."""
    return (
        sales.drop("product_name", "product_price", "store_name")
        .withColumn("year", F.year("date"))
        .withColumn("month", F.month("date"))
        .groupBy("store_id", "product_id", "year", "month")
        .agg(F.sum("quantity").alias("quantity"))
    )


def seed_pipeline() -> Pipeline:
    """StringIndexer x2 -> VectorAssembler(month, year, store, product) -> a random forest with
    Spark's defaults (20 trees, depth 5, feature subset "auto" = onethird for regression)."""
    return Pipeline(
        stages=[
            StringIndexer(inputCol="store_id", outputCol="store"),
            StringIndexer(inputCol="product_id", outputCol="product"),
            VectorAssembler(inputCols=["month", "year", "store", "product"], outputCol="features"),
            RandomForestRegressor(featuresCol="features", labelCol="quantity", seed=SEED),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; print stage timings as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="sales CSV path")
    parser.add_argument("model_dir", help="folder to save the fitted PipelineModel in")
    parser.add_argument("--sep", default=",", help="field delimiter of the CSV")
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    # Spark's defaults except where this machine's safety needs otherwise: the driver binds to
    # loopback only (the caller also sets SPARK_LOCAL_IP so the default-on UI does too).
    spark = (
        SparkSession.builder.appName("seed-style-import")
        .master("local[*]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    timings["session_start"] = time.perf_counter() - start

    start = time.perf_counter()
    monthly = monthly_sales(read_sales(spark, args.csv, args.sep)).cache()
    rows = monthly.count()  # the fit below would materialise the cache anyway; this times it
    timings["read_clean_aggregate"] = time.perf_counter() - start

    start = time.perf_counter()
    model = seed_pipeline().fit(monthly)
    timings["fit"] = time.perf_counter() - start

    start = time.perf_counter()
    model.write().overwrite().save(args.model_dir)
    timings["save"] = time.perf_counter() - start

    spark.stop()
    print(
        json.dumps(
            {"timings": {k: round(v, 3) for k, v in timings.items()}, "rows_aggregated": rows}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
