"""The answer rule as DataFrame -> DataFrame steps: a fitted model's scores become answers.

The same rule as `salesflow.serving.model.ServedModel.score` (a test holds them equal): the model
for known ids (clipped at zero), else the fallback means (product, then store, then global),
intervals for model answers only, and the version and training time in every row.

    typed_keys -> model.transform -> with_period -> with_basis(...) -> with_intervals(...)
    -> answer_columns(...)

A version with a forecast table (`salesflow.serving.table`) is answered by joining its rows:

    typed_keys -> with_period -> with_period_index -> with_table_answers(...) -> answer_columns(...)
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from salesflow.serving.model import Fallback, ModelFacts, interval_columns
from salesflow.spark.transforms import KEYS, with_period, with_period_index

__all__ = [
    "answer_columns",
    "score",
    "score_table",
    "typed_keys",
    "with_basis",
    "with_intervals",
    "with_table_answers",
]

Transform = Callable[[DataFrame], DataFrame]


def typed_keys(df: DataFrame) -> DataFrame:
    """store_id, product_id, year, month and quantity (null when absent), typed."""
    if "quantity" not in df.columns:
        df = df.withColumn("quantity", F.lit(None).cast("double"))
    return df.select(
        F.col("store_id").cast("string").alias("store_id"),
        F.col("product_id").cast("string").alias("product_id"),
        F.col("year").cast("int").alias("year"),
        F.col("month").cast("int").alias("month"),
        F.col("quantity").cast("double").alias("quantity"),
    )


def with_basis(n_stores: int, n_products: int, fallback: Fallback | None) -> Transform:
    """`basis` and `predicted_quantity`: the model's clipped value for known ids, else the
    fallback chain; `unknown_store` / `unknown_product` flag ids the model never saw."""

    def step(scored: DataFrame) -> DataFrame:
        # handleInvalid="keep" gives unseen ids the index just past the known labels.
        scored = scored.withColumns(
            {
                "unknown_store": F.col("store") == float(n_stores),
                "unknown_product": F.col("product") == float(n_products),
            }
        )
        model_value = F.greatest(F.col("prediction"), F.lit(0.0))  # demand is never negative
        by_model = ~F.col("unknown_store") & ~F.col("unknown_product")
        basis: Column = F.when(by_model, F.lit("model"))
        predicted: Column = F.when(by_model, model_value)
        if fallback is None:
            basis, predicted = basis.otherwise(F.lit("model")), predicted.otherwise(model_value)
        else:
            scored = _with_means(scored, fallback)
            use_product = ~F.col("unknown_product") & F.col("pm").isNotNull()
            use_store = ~F.col("unknown_store") & F.col("sm").isNotNull()
            basis = (
                basis.when(use_product, F.lit("product_mean"))
                .when(use_store, F.lit("store_mean"))
                .otherwise(F.lit("global_mean"))
            )
            predicted = (
                predicted.when(use_product, F.col("pm"))
                .when(use_store, F.col("sm"))
                .otherwise(F.lit(fallback.global_mean))
            )
        return scored.withColumns({"basis": basis, "predicted_quantity": predicted})

    return step


def _with_means(scored: DataFrame, fallback: Fallback) -> DataFrame:
    """The product's (`pm`) and store's (`sm`) fallback means beside each row (null if none)."""
    spark = scored.sparkSession
    products = spark.createDataFrame(
        list(fallback.product_mean.items()), "product_id string, pm double"
    )
    stores = spark.createDataFrame(list(fallback.store_mean.items()), "store_id string, sm double")
    return scored.join(F.broadcast(products), "product_id", "left").join(
        F.broadcast(stores), "store_id", "left"
    )


def with_intervals(facts: ModelFacts) -> Transform:
    """The interval bounds of each level (model answers only, low clipped at zero) and
    `clipped`: a model answer whose value or lower bound was raised to zero."""

    def step(scored: DataFrame) -> DataFrame:
        is_model = F.col("basis") == "model"
        clipped = F.col("prediction") < 0
        bounds: dict[str, Column] = {}
        for level in facts.levels:
            lo, hi = interval_columns([level])
            width = facts.half_widths.get(level)
            if width is None:
                bounds[lo] = bounds[hi] = F.lit(None).cast("double")
                continue
            low = F.col("predicted_quantity") - F.lit(width)
            clipped = clipped | (low < 0)
            bounds[lo] = F.when(is_model, F.greatest(low, F.lit(0.0)))
            bounds[hi] = F.when(is_model, F.col("predicted_quantity") + F.lit(width))
        return scored.withColumns({**bounds, "clipped": is_model & clipped})

    return step


def answer_columns(facts: ModelFacts) -> Transform:
    """The answer's columns, in `salesflow.serving.model.output_columns` order."""

    def step(scored: DataFrame) -> DataFrame:
        return scored.select(
            *KEYS,
            "period",
            "predicted_quantity",
            *interval_columns(facts.levels),
            "basis",
            "clipped",
            F.col("quantity").alias("actual_quantity"),
            (F.col("predicted_quantity") - F.col("quantity")).alias("error"),
            "unknown_store",
            "unknown_product",
            F.lit(facts.version).alias("model_version"),
            F.lit(facts.lineage.get("trained_at")).cast("string").alias("trained_at"),
        )

    return step


def score(model: PipelineModel, facts: ModelFacts, labels: tuple[int, int]) -> Transform:
    """Rows of store_id, product_id, year, month (and optional quantity) to answers.

    `labels`: how many stores and products the model knows (its indexers' label counts)."""

    def step(df: DataFrame) -> DataFrame:
        return (
            df.transform(typed_keys)
            .transform(model.transform)
            .transform(with_period)
            .transform(with_basis(*labels, facts.fallback))
            .transform(with_intervals(facts))
            .transform(answer_columns(facts))
        )

    return step


def with_table_answers(table: DataFrame, facts: ModelFacts) -> Transform:
    """`basis`, `predicted_quantity`, bounds, `clipped` and the unknown flags of rows with a
    `period_index`, from a forecast table: a row it holds -> its numbers (NaN bounds as null);
    a series it holds in another period -> "outside_horizon" with nulls; else the fallback chain.
    """
    fallback = facts.fallback
    assert fallback is not None  # ModelFacts.of refuses a table version without means
    bounds = interval_columns(facts.levels)
    series = ["store_id", "product_id"]

    def step(df: DataFrame) -> DataFrame:
        rows = table.select(
            *series,
            "period_index",
            F.col("predicted_quantity").alias("_value"),
            *(F.col(c).alias(f"_{c}") for c in bounds),
        )
        held = {
            "_store": table.select("store_id").distinct(),
            "_product": table.select("product_id").distinct(),
            "_series": table.select(*series).distinct(),
        }
        joined = df.join(rows, [*series, "period_index"], "left")
        for flag, keys in held.items():
            joined = joined.join(keys.withColumn(flag, F.lit(True)), keys.columns, "left")
        joined = _with_means(
            joined.withColumns(
                {
                    "unknown_store": F.col("_store").isNull(),
                    "unknown_product": F.col("_product").isNull(),
                }
            ),
            fallback,
        )
        found, held_series = F.col("_value").isNotNull(), F.col("_series").isNotNull()
        use_product = ~F.col("unknown_product") & F.col("pm").isNotNull()
        use_store = ~F.col("unknown_store") & F.col("sm").isNotNull()
        basis = (
            F.when(found, F.lit("model"))
            .when(held_series, F.lit("outside_horizon"))
            .when(use_product, F.lit("product_mean"))
            .when(use_store, F.lit("store_mean"))
            .otherwise(F.lit("global_mean"))
        )
        predicted = (
            F.when(found, F.col("_value"))
            .when(held_series, F.lit(None).cast("double"))
            .when(use_product, F.col("pm"))
            .when(use_store, F.col("sm"))
            .otherwise(F.lit(fallback.global_mean))
        )
        answers = {c: F.when(found & ~F.isnan(f"_{c}"), F.col(f"_{c}")) for c in bounds}
        return joined.withColumns(
            {"basis": basis, "predicted_quantity": predicted, **answers, "clipped": F.lit(False)}
        )

    return step


def score_table(table: DataFrame, facts: ModelFacts) -> Transform:
    """Rows of store_id, product_id, year, month (and optional quantity) to answers from a month
    version's forecast table (store_id, product_id, period_index, predicted_quantity, lo_/hi_)."""

    def step(df: DataFrame) -> DataFrame:
        return (
            df.transform(typed_keys)
            .transform(with_period)
            .transform(with_period_index)
            .transform(with_table_answers(table, facts))
            .transform(answer_columns(facts))
        )

    return step
