"""The day-vs-month coherence check: do a day model's daily forecasts add up to the month model's?

When one run trains both granularities from the same data, every store x product is forecast for
each month of the horizon (the `months` calendar months after the last day of history) twice: the
month model's total, and the sum of the day model's forecasts over the days of that month (both
clipped at 0, as served). Their ratio and absolute difference, per pair and month and in summary,
go into the day model's metadata (key "coherence").
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import date
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from salesflow.spark.transforms import KEYS, with_day_features

__all__ = ["coherence", "horizon_months"]

_DIGITS = 4


def horizon_months(last_day: date, months: int) -> list[tuple[int, int]]:
    """(year, month) of the `months` calendar months after the month of `last_day`."""
    first = last_day.year * 12 + last_day.month  # the next month, as months since year 0
    return [(i // 12, i % 12 + 1) for i in range(first, first + months)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, _DIGITS)


def coherence(
    spark: SparkSession,
    month_model: PipelineModel,
    day_model: PipelineModel,
    stores: Sequence[str],
    products: Sequence[str],
    last_day: date,
    months: int,
    *,
    month_version: str | None,
) -> dict[str, Any]:
    """Per store/product and horizon month: sum of daily forecasts vs the monthly forecast.

    `ratio` is day sum / month forecast (None when the month forecast is 0); `abs_diff` is
    |day sum - month forecast|. The summary gives the totals' ratio and the spread of the ratios.
    """
    calendar_months = horizon_months(last_day, months)
    bounds = spark.createDataFrame(
        [(y, m, date(y, m, 1)) for y, m in calendar_months], "year int, month int, first date"
    )
    days = bounds.select(
        F.explode(F.sequence("first", F.last_day("first"))).alias("date")
    ).transform(with_day_features)
    pairs = spark.createDataFrame([(s,) for s in stores], "store_id string").crossJoin(
        spark.createDataFrame([(p,) for p in products], "product_id string")
    )
    clipped = F.greatest(F.col("prediction"), F.lit(0.0))  # as served
    daily = (
        day_model.transform(pairs.crossJoin(days))
        .groupBy(*KEYS)
        .agg(F.sum(clipped).alias("day_sum"), F.count(F.lit(1)).alias("days"))
    )
    monthly = month_model.transform(pairs.crossJoin(bounds.select("year", "month"))).select(
        *KEYS, clipped.alias("month_forecast")
    )
    found = daily.join(monthly, list(KEYS)).orderBy(*KEYS).collect()
    rows = []
    for r in found:
        day_sum, month_forecast = float(r["day_sum"]), float(r["month_forecast"])
        rows.append(
            {
                "store_id": r["store_id"],
                "product_id": r["product_id"],
                "month": f"{r['year']:04d}-{r['month']:02d}",
                "days": int(r["days"]),
                "day_sum": _round(day_sum),
                "month_forecast": _round(month_forecast),
                "ratio": _round(day_sum / month_forecast) if month_forecast else None,
                "abs_diff": _round(abs(day_sum - month_forecast)),
            }
        )
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    total_day = sum(float(r["day_sum"]) for r in found)
    total_month = sum(float(r["month_forecast"]) for r in found)
    summary = {
        "pairs": len(stores) * len(products),
        "rows": len(rows),
        "total_day_sum": _round(total_day),
        "total_month_forecast": _round(total_month),
        "total_ratio": _round(total_day / total_month) if total_month else None,
        "ratio_min": _round(min(ratios)) if ratios else None,
        "ratio_median": _round(statistics.median(ratios)) if ratios else None,
        "ratio_max": _round(max(ratios)) if ratios else None,
        "mean_abs_diff": _round(sum(r["abs_diff"] for r in rows) / len(rows)) if rows else None,
        "max_abs_diff": max((r["abs_diff"] for r in rows), default=None),
    }
    return {
        "month_version": month_version,
        "months": [f"{y:04d}-{m:02d}" for y, m in calendar_months],
        "method": "per store/product and month after the history: sum of the day model's daily "
        "forecasts over the month vs the month model's forecast, both clipped at 0; ratio = "
        "day sum / month forecast",
        "summary": summary,
        "rows": rows,
    }
