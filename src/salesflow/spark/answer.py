"""The answer rule as DataFrame -> DataFrame steps: a fitted model's scores become answers.

The same rule as `salesflow.serving.model.ServedModel.score` (a test holds them equal): the model
for known ids (clipped at zero), else the fallback means (product, then store, then global; that
calendar month's where the version records month profiles, with an interval from their spread),
and the version and training time in every row.

    typed_keys -> model.transform -> with_period -> with_basis(...) -> with_intervals(...)
    -> answer_columns(...)

A version with a forecast table (`salesflow.serving.table`) is answered by joining its rows:

    typed_keys -> with_period -> with_period_index -> with_table_answers(...) -> answer_columns(...)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from salesflow.serving.facts import fallback_z
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
        spread: Column = F.lit(None).cast("double")
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
            value, spread = _fallback_values(fallback, use_product, use_store)
            predicted = predicted.otherwise(value)
            spread = F.when(~by_model, spread)
        return scored.withColumns(
            {"basis": basis, "predicted_quantity": predicted, _SPREAD: spread}
        )

    return step


#: The fallback answer's month spread (null: none), which its interval bounds are built from.
_SPREAD = "_fallback_spread"


def _fallback_values(
    fallback: Fallback, use_product: Column, use_store: Column
) -> tuple[Column, Column]:
    """A fallback answer and its spread, as `salesflow.serving.model._fall_back` gives them:
    the product's (else the store's, else the global) month mean where the version records
    one, with its spread; else the flat mean with no spread. Needs `_with_means`' columns."""
    chain = (
        (use_product, "pm", "ppm", "pps"),
        (use_store, "sm", "spm", "sps"),
        (F.lit(True), None, "gpm", "gps"),
    )
    value: Column | None = None
    spread: Column | None = None
    for use, flat, month_mean, month_spread in chain:
        flat_value = F.col(flat) if flat else F.lit(fallback.global_mean)
        this = F.coalesce(F.col(month_mean), flat_value)
        this_spread = F.when(F.col(month_mean).isNotNull(), F.col(month_spread))
        value = F.when(use, this) if value is None else value.when(use, this)
        spread = F.when(use, this_spread) if spread is None else spread.when(use, this_spread)
    assert value is not None and spread is not None
    return value, spread


def _with_means(scored: DataFrame, fallback: Fallback) -> DataFrame:
    """Beside each row: the product's (`pm`) and store's (`sm`) fallback means, and that
    month's product, store and global means and spreads (`ppm`/`pps`, `spm`/`sps`, `gpm`/`gps`;
    null when the version records no month profiles or the month had no row)."""
    spark = scored.sparkSession
    products = spark.createDataFrame(
        list(fallback.product_mean.items()), "product_id string, pm double"
    )
    stores = spark.createDataFrame(list(fallback.store_mean.items()), "store_id string, sm double")
    profiles = fallback.profiles
    by_month = {
        "product": profiles.product if profiles else {},
        "store": profiles.store if profiles else {},
        "global": {"": profiles.overall} if profiles else {},
    }
    rows = {
        kind: [
            (key, m + 1, _or_null(mean[m]), _or_null(sd[m]))
            for key, (mean, sd) in found.items()
            for m in range(12)
        ]
        for kind, found in by_month.items()
    }
    month_schema = "{key} string, month int, {p}m double, {p}s double"
    product_months = spark.createDataFrame(
        rows["product"], month_schema.format(key="product_id", p="pp")
    )
    store_months = spark.createDataFrame(rows["store"], month_schema.format(key="store_id", p="sp"))
    global_months = spark.createDataFrame(
        rows["global"], month_schema.format(key="_global", p="gp")
    ).drop("_global")
    return (
        scored.join(F.broadcast(products), "product_id", "left")
        .join(F.broadcast(stores), "store_id", "left")
        .join(F.broadcast(product_months), ["product_id", "month"], "left")
        .join(F.broadcast(store_months), ["store_id", "month"], "left")
        .join(F.broadcast(global_months), ["month"], "left")
    )


def _or_null(value: float) -> float | None:
    return None if math.isnan(value) else value


def with_intervals(facts: ModelFacts) -> Transform:
    """The interval bounds of each level (model answers only, low clipped at zero) and
    `clipped`: a model answer whose value or lower bound was raised to zero."""

    def step(scored: DataFrame) -> DataFrame:
        is_model = F.col("basis") == "model"
        clipped = F.col("prediction") < 0
        bounds: dict[str, Column] = {}
        for level in facts.levels:
            lo, hi = interval_columns([level])
            fallback_lo, fallback_hi = _fallback_bounds(level)
            width = facts.half_widths.get(level)
            if width is None:
                bounds[lo], bounds[hi] = fallback_lo, fallback_hi
                continue
            low = F.col("predicted_quantity") - F.lit(width)
            clipped = clipped | (low < 0)
            bounds[lo] = F.when(is_model, F.greatest(low, F.lit(0.0))).otherwise(fallback_lo)
            bounds[hi] = F.when(is_model, F.col("predicted_quantity") + F.lit(width)).otherwise(
                fallback_hi
            )
        return scored.withColumns({**bounds, "clipped": is_model & clipped}).drop(_SPREAD)

    return step


def _fallback_bounds(level: str) -> tuple[Column, Column]:
    """A fallback answer's bounds at `level`: its month mean +- the normal quantile times the
    month's spread, low clipped at zero; null without a spread (`serving.model._fallback_bounds`)."""
    z = F.lit(fallback_z(level))
    spread = F.col(_SPREAD)
    low = F.greatest(F.col("predicted_quantity") - z * spread, F.lit(0.0))
    high = F.col("predicted_quantity") + z * spread
    return F.when(spread.isNotNull(), low), F.when(spread.isNotNull(), high)


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
        value, spread = _fallback_values(fallback, use_product, use_store)
        predicted = (
            F.when(found, F.col("_value"))
            .when(held_series, F.lit(None).cast("double"))
            .otherwise(value)
        )
        joined = joined.withColumns(
            {
                "basis": basis,
                "predicted_quantity": predicted,
                _SPREAD: F.when(~held_series, spread),
            }
        )
        answers: dict[str, Column] = {}
        for level in facts.levels:
            low, high = interval_columns([level])
            fallback_low, fallback_high = _fallback_bounds(level)
            for column, otherwise in ((low, fallback_low), (high, fallback_high)):
                written = F.when(~F.isnan(f"_{column}"), F.col(f"_{column}"))
                answers[column] = F.when(found, written).otherwise(otherwise)
        return joined.withColumns({**answers, "clipped": F.lit(False)}).drop(_SPREAD)

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
