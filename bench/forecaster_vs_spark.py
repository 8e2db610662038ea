"""Forecast latency: Spark `transform` on a warm session against the in-process Forecaster.

Fits salesflow's own pipeline on a seeded synthetic monthly history, saves it, then times one row,
1000 rows and a large batch both ways and checks the answers are identical.

    .venv/bin/python bench/forecaster_vs_spark.py --regressor gbt --stores 30 --products 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel

from salesflow.config import Settings
from salesflow.serving.forest import Forecaster
from salesflow.spark.pipeline import build_pipeline
from salesflow.spark.session import get_spark, stop_spark

COLUMNS = ["store_id", "product_id", "month", "year"]


def _history(rng: np.random.Generator, stores: int, products: int, years: int) -> list[tuple]:
    """Monthly quantities with a store level, a product level, a yearly season and noise."""
    store_level = rng.uniform(5, 50, stores)
    product_level = rng.uniform(0.5, 3, products)
    rows = []
    for s in range(stores):
        for p in range(products):
            for y in range(2020, 2020 + years):
                for m in range(1, 13):
                    season = 1 + 0.3 * np.sin(2 * np.pi * (m - 1) / 12)
                    quantity = store_level[s] * product_level[p] * season + rng.normal(0, 2)
                    rows.append((f"s{s}", f"p{p}", m, y, float(quantity)))
    return rows


def _requests(rng: np.random.Generator, n: int, stores: int, products: int) -> dict[str, Any]:
    """Random rows, ~5% of them with a store or product the model never saw."""
    return {
        "store_id": [f"s{i}" for i in rng.integers(0, int(stores * 1.05) + 1, n)],
        "product_id": [f"p{i}" for i in rng.integers(0, int(products * 1.05) + 1, n)],
        "month": rng.integers(1, 13, n).tolist(),
        "year": rng.integers(2020, 2026, n).tolist(),
    }


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regressor", choices=["random_forest", "gbt"], default="random_forest")
    parser.add_argument("--stores", type=int, default=30)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200_000, help="rows in the throughput test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            spark_master="local[2]",
            regressor=args.regressor,
            _env_file=None,
        )
        spark = get_spark(settings)
        rng = np.random.default_rng(settings.seed)
        train = spark.createDataFrame(
            _history(rng, args.stores, args.products, args.years), [*COLUMNS, "quantity"]
        )
        start = time.perf_counter()
        pipeline = build_pipeline(settings, args.stores, args.products).fit(train)
        fit_s = time.perf_counter() - start
        path = Path(tmp) / "model"
        pipeline.write().overwrite().save(str(path))

        start = time.perf_counter()
        forecaster = Forecaster.load(path)
        load_ms = (time.perf_counter() - start) * 1e3
        model = PipelineModel.load(str(path))
        schema = "store_id string, product_id string, month int, year int"

        def spark_predict(cols: dict[str, Any]) -> np.ndarray:
            frame = spark.createDataFrame(
                list(zip(*(cols[c] for c in COLUMNS), strict=True)), schema
            )
            return np.array([r.prediction for r in model.transform(frame).collect()])

        one = _requests(rng, 1, args.stores, args.products)
        thousand = _requests(rng, 1000, args.stores, args.products)
        batch = _requests(rng, args.batch, args.stores, args.products)
        same = np.array_equal(forecaster.predict(thousand), spark_predict(thousand))

        spark_predict(one)  # warm up the JVM's code paths
        spark_one = statistics.median(_times(lambda: spark_predict(one), 20)) * 1e3
        one_us = [t * 1e6 for t in _times(lambda: forecaster.predict(one), 5000)]
        thousand_ms = statistics.median(_times(lambda: forecaster.predict(thousand), 200)) * 1e3
        batch_s = min(_times(lambda: forecaster.predict(batch), 3))
        stop_spark()

    print(
        f"model: {args.regressor}, {forecaster.num_trees} trees, {args.stores} stores x "
        f"{args.products} products x {args.years} years; fit {fit_s:.1f} s, "
        f"Forecaster.load {load_ms:.0f} ms"
    )
    print(f"identical to Spark on 1000 rows:  {same}")
    print(f"Spark transform, 1 row (warm):    {spark_one:8.1f} ms")
    print(
        f"Forecaster, 1 row:                {statistics.median(one_us):8.1f} us median, "
        f"{np.percentile(one_us, 99):.1f} us p99"
    )
    print(f"Forecaster, 1000 rows:            {thousand_ms:8.2f} ms")
    print(
        f"Forecaster, {args.batch} rows:        {batch_s:8.2f} s = "
        f"{args.batch / batch_s:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
