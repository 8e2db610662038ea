"""The Spark answer path of a table version equals the in-process one on the same rows, and
`predict` of a sales CSV answers from the table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.serving.model import ServedModel, interval_columns
from salesflow.spark.predict import predict, predict_frame, to_records
from tests.fixtures.forecast_tables import (
    FALLBACK,
    FALLBACK_PROFILES,
    FIRST_MONTH,
    PRODUCTS,
    STORES,
    publish_table_version,
)

pytestmark = pytest.mark.slow

Key = tuple[Any, Any, int, int]


def _rows() -> list[Key]:
    """Every held and unheld store x product (and a missing store) for months from before the
    table's horizon to after it."""
    months = [divmod(FIRST_MONTH + i, 12) for i in range(-2, 9)]
    return [
        (s, p, y, m + 1)
        for s in [*STORES, "s9", None]
        for p in [*PRODUCTS, "p9"]
        for y, m in months
    ]


def _in_process(served: ServedModel, rows: list[Key]) -> dict[Key, dict[str, Any]]:
    scored = served.score(*(list(c) for c in zip(*rows, strict=True)))
    levels = served.facts.levels
    out = {}
    for i, key in enumerate(rows):
        bounds = [v for level in levels for v in (scored.lower[level][i], scored.upper[level][i])]
        predicted = float(scored.predicted[i])
        out[key] = {
            "predicted_quantity": None if math.isnan(predicted) else predicted,
            **{
                c: None if math.isnan(v) else v
                for c, v in zip(interval_columns(levels), bounds, strict=True)
            },
            "basis": scored.basis[i],
            "clipped": bool(scored.clipped[i]),
            "unknown_store": bool(scored.unknown_store[i]),
            "unknown_product": bool(scored.unknown_product[i]),
        }
    return out


@pytest.mark.parametrize("profiles", [False, True], ids=["flat-means", "month-profiles"])
def test_spark_answers_a_table_version_as_the_in_process_path_does(
    spark: SparkSession, tmp_path: Path, profiles: bool
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version, _ = publish_table_version(
        registry, fallback=FALLBACK_PROFILES if profiles else FALLBACK
    )
    rows = _rows()
    frame = spark.createDataFrame(rows, "store_id string, product_id string, year int, month int")
    ours = _in_process(ServedModel.load(version), rows)
    by_spark = {
        (r["store_id"], r["product_id"], r["year"], r["month"]): r.asDict()
        for r in predict_frame(version, frame).collect()
    }
    assert by_spark.keys() == ours.keys()
    for key, want in ours.items():
        got = {c: by_spark[key][c] for c in want}
        assert got == want, key
        assert by_spark[key]["model_version"] == version.version
    bases = {row["basis"] for row in ours.values()}
    assert bases == {"model", "outside_horizon", "product_mean", "store_mean", "global_mean"}
    fallback_bounds = [
        row["lo_95"] for row in ours.values() if row["basis"].endswith("_mean") and row["lo_95"]
    ]
    assert bool(fallback_bounds) == profiles  # month profiles give fallback answers intervals


def test_predict_of_a_csv_answers_from_the_table(spark: SparkSession, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)
    registry = ModelRegistry(tmp_path / "models")
    _, columns = publish_table_version(registry)
    source = tmp_path / "sales.csv"
    source.write_text(
        "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
        "p1,a,1.0,s1,x,3,2024-01-05\np1,a,1.0,s1,x,4,2024-01-20\np1,a,1.0,s1,x,5,2024-09-01\n"
    )
    result = predict(spark, settings, str(source), registry=registry)
    records = to_records(result.frame)
    assert [(r["period"], r["basis"]) for r in records] == [
        ("2024-01", "model"),
        ("2024-09", "outside_horizon"),
    ]
    assert records[0]["predicted_quantity"] == columns["predicted_quantity"][0]
    assert records[0]["error"] == columns["predicted_quantity"][0] - 7
    assert records[1]["predicted_quantity"] is None and records[1]["error"] is None
