"""In-process forecasts equal Spark's `transform` on every row, including unseen stores/products."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import (
    DecisionTreeRegressor,
    GBTRegressor,
    RandomForestRegressor,
)
from pyspark.sql import DataFrame, SparkSession

from salesflow.errors import InputError, ModelError
from salesflow.serving.forest import Forecaster
from salesflow.serving.jvm_float import fma, jvm_double_lanes, product_error

STORES = ["s1", "s2", "s3"]
PRODUCTS = ["p1", "p2", "p3"]
#: Rows the models never saw: a new store, a new product, a missing store, a later year.
UNSEEN_STORES = ["s9", None]
UNSEEN_PRODUCTS = ["p9"]
MONTH_COLUMNS = ["store_id", "product_id", "month", "year"]
DAY_COLUMNS = ["store_id", "product_id", "day_of_week", "day_of_month", "month", "year"]


def _quantity(rng: np.random.Generator, store: str, product: str, month: int, day: int) -> float:
    """Seasonal demand: a store level, a product level, a yearly wave, a weekly bump, noise."""
    base = 10 * int(store[1]) + 5 * int(product[1])
    season = 8 * np.sin(2 * np.pi * (month - 1) / 12)
    return float(base + season + 3 * (day % 7 == 5) + rng.normal(0, 2))


def _monthly(spark: SparkSession) -> DataFrame:
    rng = np.random.default_rng(7)
    rows = [
        (s, p, m, y, _quantity(rng, s, p, m, 0))
        for s in STORES
        for p in PRODUCTS
        for y in (2021, 2022, 2023)
        for m in range(1, 13)
    ]
    return spark.createDataFrame(rows, [*MONTH_COLUMNS, "quantity"])


def _daily(spark: SparkSession) -> DataFrame:
    rng = np.random.default_rng(11)
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(0, 365, 2)]
    rows = [
        (s, p, d.isoweekday(), d.day, d.month, d.year, _quantity(rng, s, p, d.month, d.weekday()))
        for s in STORES
        for p in PRODUCTS
        for d in days
    ]
    return spark.createDataFrame(rows, [*DAY_COLUMNS, "quantity"])


def _test_rows(columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Every store x product (known and unseen) for a spread of dates, one tuple per row."""
    dates = [dt.date(y, m, d) for y in (2022, 2023, 2024) for m in range(1, 13) for d in (3, 17)]
    rows = []
    for s in [*STORES, *UNSEEN_STORES]:
        for p in [*PRODUCTS, *UNSEEN_PRODUCTS]:
            for d in dates:
                values = {
                    "store_id": s,
                    "product_id": p,
                    "day_of_week": d.isoweekday(),
                    "day_of_month": d.day,
                    "month": d.month,
                    "year": d.year,
                }
                rows.append(tuple(values[c] for c in columns))
    return rows


def _regressor(kind: str) -> Any:
    common = {"featuresCol": "features", "labelCol": "quantity", "seed": 3, "maxBins": 32}
    if kind == "gbt":  # 20 trees: more than one SIMD vector of trees, so the ddot order matters
        return GBTRegressor(maxIter=20, maxDepth=4, **common)
    if kind == "random_forest":
        return RandomForestRegressor(numTrees=20, maxDepth=5, **common)
    return DecisionTreeRegressor(maxDepth=6, **common)


def _fit_and_save(train: DataFrame, inputs: list[str], kind: str, path: Path) -> Path:
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="store_id", outputCol="store", handleInvalid="keep"),
            StringIndexer(inputCol="product_id", outputCol="product", handleInvalid="keep"),
            VectorAssembler(inputCols=inputs, outputCol="features"),
            _regressor(kind),
        ]
    )
    pipeline.fit(train).write().overwrite().save(str(path))
    return path


def _spark_predictions(
    spark: SparkSession, path: Path, rows: list[tuple[Any, ...]], columns: list[str]
) -> np.ndarray:
    types = {"store_id": "string", "product_id": "string"}
    schema = ", ".join(f"{c} {types.get(c, 'int')}" for c in ["row", *columns])
    frame = spark.createDataFrame([(i, *r) for i, r in enumerate(rows)], schema)
    out = PipelineModel.load(str(path)).transform(frame).select("row", "prediction").collect()
    return np.array([r.prediction for r in sorted(out, key=lambda r: r.row)])


def _columns(rows: list[tuple[Any, ...]], names: Sequence[str]) -> Mapping[str, list[Any]]:
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def _jvm_lanes(spark: SparkSession) -> int | None:
    """Doubles per vector of Spark's Java BLAS, or None when it is not VectorBLAS."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    blas = jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance().getClass().getName()
    if not blas.endswith("VectorBLAS"):
        return None
    species = jvm.java.lang.Class.forName("jdk.incubator.vector.DoubleVector")
    return int(species.getField("SPECIES_MAX").get(None).length())


@pytest.fixture(scope="module")
def models(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Month models of each kind and a day model with extra numeric features, fitted once."""
    root = tmp_path_factory.mktemp("serving-models")
    monthly = _monthly(spark)
    saved = {
        kind: _fit_and_save(monthly, ["month", "year", "store", "product"], kind, root / kind)
        for kind in ("random_forest", "gbt", "decision_tree")
    }
    # Store first and two day features: the assembler's order, not a fixed one, must be followed.
    day_inputs = ["store", "day_of_week", "day_of_month", "month", "year", "product"]
    saved["daily_gbt"] = _fit_and_save(_daily(spark), day_inputs, "gbt", root / "daily_gbt")
    return saved


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("random_forest", MONTH_COLUMNS),
        ("gbt", MONTH_COLUMNS),
        ("decision_tree", MONTH_COLUMNS),
        ("daily_gbt", DAY_COLUMNS),
    ],
)
def test_predictions_equal_spark_transform(
    spark: SparkSession, models: dict[str, Path], name: str, columns: list[str]
) -> None:
    rows = _test_rows(columns)
    expected = _spark_predictions(spark, models[name], rows, columns)
    lanes = _jvm_lanes(spark)
    forecaster = Forecaster.load(models[name], dot_lanes=lanes)
    got = forecaster.predict(_columns(rows, columns))

    assert set(forecaster.feature_columns) == set(columns)
    assert forecaster.unknown_mask("store_id", [r[0] for r in rows]).sum() == 2 * len(rows) // 5
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    if lanes is not None:  # Spark's Java BLAS order is known: the numbers are the same bits
        differ = np.flatnonzero(got != expected)
        assert differ.size == 0, f"{differ.size} rows differ in the last bits, e.g. {differ[:5]}"


@pytest.mark.slow
def test_lane_detection_matches_the_jvm(spark: SparkSession) -> None:
    lanes = _jvm_lanes(spark)
    if lanes is None:
        pytest.skip("Spark's Java BLAS is not VectorBLAS here (no jdk.incubator.vector)")
    assert jvm_double_lanes() == lanes


@pytest.mark.slow
def test_gbt_needs_the_blas_summation_order(spark: SparkSession, models: dict[str, Path]) -> None:
    """A naive left-to-right weighted sum is not what Spark computes (so the emulation matters)."""
    lanes = _jvm_lanes(spark)
    if lanes is None:
        pytest.skip("Spark's Java BLAS is not VectorBLAS here (no jdk.incubator.vector)")
    rows = _test_rows(MONTH_COLUMNS)
    expected = _spark_predictions(spark, models["gbt"], rows, MONTH_COLUMNS)
    # More lanes than trees: the whole sum is the sequential multiply-add tail.
    sequential = Forecaster.load(models["gbt"], dot_lanes=1024).predict(
        _columns(rows, MONTH_COLUMNS)
    )
    assert np.any(sequential != expected)
    np.testing.assert_allclose(sequential, expected, rtol=1e-12)


@pytest.mark.slow
def test_labels_features_and_input_errors(models: dict[str, Path]) -> None:
    forecaster = Forecaster.load(models["daily_gbt"])
    assert forecaster.kind == "gbt"
    assert forecaster.num_trees == 20
    assert forecaster.feature_columns == (
        "store_id",
        "day_of_week",
        "day_of_month",
        "month",
        "year",
        "product_id",
    )
    assert sorted(forecaster.known_labels("store_id")) == STORES
    assert forecaster.unknown_mask("product_id", ["p2", "p9", None]).tolist() == [False, True, True]
    one = {
        "store_id": ["s1"],
        "product_id": ["p1"],
        "day_of_week": [1],
        "day_of_month": [2],
        "month": [3],
        "year": [2023],
    }
    assert forecaster.predict(one).shape == (1,)
    assert forecaster.predict({k: [] for k in one}).shape == (0,)
    with pytest.raises(InputError, match=r"missing columns \['day_of_week'\]"):
        forecaster.predict({k: v for k, v in one.items() if k != "day_of_week"})
    with pytest.raises(InputError, match="column 'month', row 0: missing value"):
        forecaster.predict({**one, "month": [None]})
    with pytest.raises(InputError, match="different lengths"):
        forecaster.predict({**one, "year": [2023, 2024]})
    with pytest.raises(InputError, match="not an indexed column"):
        forecaster.known_labels("month")


def _write_metadata(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "metadata").mkdir(parents=True)
    (folder / "metadata" / "part-00000").write_text(json.dumps(meta), encoding="utf-8")


def test_a_folder_that_is_not_a_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a folder"):
        Forecaster.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="no metadata/part-\\* file"):
        Forecaster.load(tmp_path)
    other = tmp_path / "other"
    _write_metadata(other, {"class": "org.apache.spark.ml.feature.VectorAssembler"})
    with pytest.raises(
        ModelError, match=r"holds a org\.apache\.spark\.ml\.feature\.VectorAssembler"
    ):
        Forecaster.load(other)
    broken = tmp_path / "broken"
    _write_metadata(
        broken,
        {"class": "org.apache.spark.ml.PipelineModel", "paramMap": {"stageUids": ["Foo_1"]}},
    )
    with pytest.raises(ModelError, match="stage Foo_1 has no folder"):
        Forecaster.load(broken)


def test_fma_emulation_rounds_once_like_java() -> None:
    """Checked against exact rational arithmetic, including near-cancelling sums."""
    rng = np.random.default_rng(5)
    n = 20_000
    a = rng.normal(size=n) * 10.0 ** rng.integers(-6, 6, n)
    b = rng.normal(size=n) * 10.0 ** rng.integers(-6, 6, n)
    c = rng.normal(size=n) * 10.0 ** rng.integers(-9, 9, n)
    c[: n // 2] = -(a[: n // 2] * b[: n // 2]) * (1 + rng.normal(size=n // 2) * 1e-15)
    product = a * b
    got = fma(product, product_error(a, b, product), c)
    exact = [
        float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c, strict=True)
    ]
    assert np.array_equal(got, np.array(exact))
    assert np.any(product + c != got)  # the cases include ones a multiply-then-add gets wrong


@pytest.mark.slow
def test_a_salesflow_day_model_served_from_dates_equals_spark(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The day pipeline salesflow trains, answered from query dates, matches Spark bit for bit."""
    from pyspark.sql import functions as F

    from salesflow.config import Settings
    from salesflow.registry import ModelVersion
    from salesflow.serving.model import ServedModel
    from salesflow.spark.pipeline import build_pipeline
    from salesflow.spark.transforms import fill_missing_days, with_day_features

    rng = np.random.default_rng(5)
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(0, 400, 3)]
    sold = spark.createDataFrame(
        [
            (s, p, d, _quantity(rng, s, p, d.month, d.weekday()))
            for s in STORES[:2]
            for p in PRODUCTS[:2]
            for d in days
        ],
        "store_id string, product_id string, date date, quantity double",
    )
    history = sold.transform(fill_missing_days).drop("filled").transform(with_day_features)
    settings = Settings(data_dir=tmp_path, num_trees=12, _env_file=None)  # type: ignore[call-arg]
    folder = tmp_path / "v0001"
    build_pipeline(settings, 2, 2, "day").fit(history).write().save(str(folder / "pipeline"))
    served = ServedModel.load(ModelVersion("v0001", folder, {"granularity": "day"}, True))
    assert set(served.forecaster.feature_columns) == set(DAY_COLUMNS)
    assert served.facts.granularity == "day"

    ask = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(0, 120, 5)]
    keys = [(s, p, d) for s in [*STORES[:2], "s9"] for p in PRODUCTS[:2] for d in ask]
    frame = spark.createDataFrame(
        [(i, *k) for i, k in enumerate(keys)],
        "row int, store_id string, product_id string, date date",
    ).transform(with_day_features)
    spark_rows = (
        PipelineModel.load(str(folder / "pipeline"))
        .transform(frame)
        .select("row", F.greatest("prediction", F.lit(0.0)).alias("p"))
        .collect()
    )
    expected = np.array([r.p for r in sorted(spark_rows, key=lambda r: r.row)])
    scored = served.score(
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2].year for k in keys],
        [k[2].month for k in keys],
        [k[2] for k in keys],
    )
    # No fallback means in this metadata: the model answers the unseen store "s9" too, as Spark.
    assert scored.unknown_store.sum() == 2 * len(ask) and set(scored.basis) == {"model"}
    np.testing.assert_allclose(scored.predicted, expected, rtol=0, atol=1e-9)
    assert np.array_equal(scored.predicted, expected)  # a forest's mean: the same bits
