"""Pure DataFrame -> DataFrame steps from raw sales rows to monthly or daily demand (`.transform`).

No reads, no writes, no actions: each function only describes a plan, so each is tested on a tiny
frame and the job composes them. Spark 4 runs in ANSI mode, so every parse uses a `try_*` function:
a bad value becomes null and then a `reject_reason`, never an exception halfway through a job.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from salesflow.sales.contract import QUANTITY_REASONS, REJECT_REASONS

__all__ = [
    "DAY_FEATURE_COLUMNS",
    "DAY_KEYS",
    "DAY_SEASON",
    "KEYS",
    "QUANTITY_REASONS",
    "REJECT_REASONS",
    "aggregate_daily",
    "aggregate_monthly",
    "aggregate_with_rejects",
    "clean",
    "fill_missing_days",
    "keep_for_prediction",
    "parse_date",
    "parse_quantity",
    "reject_reason",
    "rejected_rows",
    "seasonal_changes",
    "seasonal_naive",
    "validate",
    "window_rows",
    "with_day_features",
    "with_day_index",
    "with_period",
    "with_period_index",
]

#: The grain of the monthly aggregate.
KEYS: tuple[str, ...] = ("store_id", "product_id", "year", "month")
#: Months in a season: the seasonal-naive lag.
SEASON = 12
#: The grain of the daily aggregate.
DAY_KEYS: tuple[str, ...] = ("store_id", "product_id", "date")
#: Days in a day-level season: 52 weeks, so the seasonal-naive value falls on the same weekday.
DAY_SEASON = 364
#: Columns a daily row carries for the day pipeline (with `quantity`).
DAY_FEATURE_COLUMNS: tuple[str, ...] = (
    *DAY_KEYS,
    "year",
    "month",
    "day_of_week",
    "day_of_month",
)
_SERIES = ["store_id", "product_id"]

_BLANKS = " \t\r\n"
_DATE_FORMATS = ("yyyy-MM-dd", "yyyy-MM-dd HH:mm:ss")
#: The shape of a plain `yyyy-MM-dd` date, checked before the cheap cast.
_PLAIN_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


#: Fields `validate` trims and types, and the temporary column each one's typed value lives in.
_TYPED = {
    "store_id": "__salesflow_store_id",
    "product_id": "__salesflow_product_id",
    "date": "__salesflow_date",
    "quantity": "__salesflow_quantity",
}
#: Temporary columns: the trimmed date and quantity texts, and the quantity cast before its checks.
_DATE_TEXT = "__salesflow_date_text"
_QUANTITY_TEXT = "__salesflow_quantity_text"
_QUANTITY_CAST = "__salesflow_quantity_cast"


def _text(name: str) -> Column:
    """A text column trimmed of blanks (incl. a stray CR), with empty meaning null."""
    return F.nullif(F.trim(F.col(name), F.lit(_BLANKS)), F.lit(""))


def parse_date(text: Column) -> Column:
    """`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` as a date; null when it is neither.

    The common plain date is shape-checked and cast (Spark's own date parser) instead of going
    through a formatter: the same answers (tests/unit/test_transforms.py compares them) for ~1/3
    of the cost of `to_date(text, "yyyy-MM-dd")`. The cast alone would also take "2021-1-5" or
    "2021-01-05 junk", which the format rejects, hence the shape check.
    """
    stamp = _DATE_FORMATS[1]
    return F.when(text.rlike(_PLAIN_DATE), text.try_cast("date")).otherwise(
        F.to_date(F.try_to_timestamp(text, F.lit(stamp)))
    )


def parse_quantity(text: Column) -> Column:
    """An integer or decimal quantity as a double; null for text, NaN and infinities."""
    return _finite(text.try_cast("double"))


def _finite(value: Column) -> Column:
    """A double column with NaN and infinities turned into null."""
    return F.when(~F.isnan(value) & (F.abs(value) < F.lit(float("inf"))), value)


def reject_reason(
    store_id: Column, product_id: Column, day: Column, quantity_text: Column, quantity: Column
) -> Column:
    """The first reason (see REJECT_REASONS) a row is unusable, from its typed fields; null if fine.

    Takes the trimmed ids, the parsed date, the trimmed quantity text and the parsed quantity, so
    each parse runs once per row: Spark does not share a parse between a `CASE WHEN`'s branches.
    """
    return (
        F.when(store_id.isNull(), F.lit("missing_store_id"))
        .when(product_id.isNull(), F.lit("missing_product_id"))
        .when(day.isNull(), F.lit("bad_date"))
        .when(quantity_text.isNull(), F.lit("missing_quantity"))
        .when(quantity.isNull(), F.lit("bad_quantity"))
        .when(quantity < 0, F.lit("negative_quantity"))
    )


def _with_typed(df: DataFrame) -> DataFrame:
    """`df` plus temporary columns: each field trimmed, then parsed, once per row, and the reason.

    One projection per step: Spark keeps them apart rather than copy a parse into every place that
    uses it (its CollapseProject rule will not duplicate an expensive expression).
    """
    store, product, day, quantity = (F.col(_TYPED[name]) for name in _TYPED)
    return (
        df.withColumns(
            {
                _TYPED["store_id"]: _text("store_id"),
                _TYPED["product_id"]: _text("product_id"),
                _DATE_TEXT: _text("date"),
                _QUANTITY_TEXT: _text("quantity"),
            }
        )
        .withColumns(
            {
                _TYPED["date"]: parse_date(F.col(_DATE_TEXT)),
                _QUANTITY_CAST: F.col(_QUANTITY_TEXT).try_cast("double"),
            }
        )
        .withColumn(_TYPED["quantity"], _finite(F.col(_QUANTITY_CAST)))
        .withColumn(
            "reject_reason", reject_reason(store, product, day, F.col(_QUANTITY_TEXT), quantity)
        )
    )


def _drop_typed(df: DataFrame) -> DataFrame:
    """`df` without `_with_typed`'s temporary columns."""
    return df.drop(*_TYPED.values(), _DATE_TEXT, _QUANTITY_TEXT, _QUANTITY_CAST)


def validate(df: DataFrame) -> DataFrame:
    """Add `reject_reason` and type the row: trimmed ids, `quantity` double, `date` date."""
    typed = _with_typed(df)
    return _drop_typed(typed.withColumns({name: F.col(tmp) for name, tmp in _TYPED.items()}))


def rejected_rows(df: DataFrame) -> DataFrame:
    """The raw text rows that fail validation, unchanged, with their `reject_reason`."""
    return _drop_typed(_with_typed(df)).filter(F.col("reject_reason").isNotNull())


def clean(df: DataFrame) -> DataFrame:
    """Drop names, price and extra columns; add `year` and `month` from the date."""
    kept = ["store_id", "product_id", "date", "quantity"]
    if "reject_reason" in df.columns:
        kept.append("reject_reason")
    return df.select(
        *kept,
        F.year("date").alias("year"),
        F.month("date").alias("month"),
    )


def aggregate_monthly(df: DataFrame) -> DataFrame:
    """Total quantity per store, product and month (the original job's reduce step)."""
    return df.groupBy(*KEYS).agg(F.sum("quantity").alias("quantity"))


def aggregate_daily(df: DataFrame) -> DataFrame:
    """Total quantity per store, product and date (the day model's grain)."""
    return df.groupBy(*DAY_KEYS).agg(F.sum("quantity").alias("quantity"))


def aggregate_with_rejects(
    df: DataFrame, keys: tuple[str, ...] = KEYS, names: bool = False
) -> DataFrame:
    """One pass over cleaned rows giving both the aggregate by `keys` and the reject counts.

    Accepted rows group by `keys` (`KEYS` monthly, `DAY_KEYS` daily; `reject_reason` null);
    rejected rows collapse into one group per reason with null keys. Every group carries its row
    count and first/last date; with `names` (rows that still have `store_name` and
    `product_name`), also a store and a product name of the group (trimmed, blank as null).
    """
    ok = F.col("reject_reason").isNull()
    labels = ("store_name", "product_name") if names else ()
    keyed = df.select(
        "reject_reason",
        *[F.when(ok, F.col(k)).alias(k) for k in keys if k != "date"],
        F.when(ok, F.col("quantity")).alias("quantity"),
        F.when(ok, F.col("date")).alias("date"),
        *[F.when(ok, _text(label)).alias(label) for label in labels],
    )
    return keyed.groupBy("reject_reason", *keys).agg(
        F.sum("quantity").alias("quantity"),
        F.count(F.lit(1)).alias("rows"),
        F.min("date").alias("first_date"),
        F.max("date").alias("last_date"),
        *[F.max(label).alias(label) for label in labels],
    )


def keep_for_prediction(df: DataFrame) -> DataFrame:
    """Validated rows a model can score: good ids and date; a bad quantity only blanks the actual."""
    reason = F.col("reject_reason")
    usable = reason.isNull() | reason.isin(*QUANTITY_REASONS)
    return (
        df.filter(usable)
        .withColumn("quantity", F.when(reason.isNull(), F.col("quantity")))
        .drop("reject_reason")
    )


def with_period(df: DataFrame) -> DataFrame:
    """Add `period`, the month as a "YYYY-MM" string."""
    return df.withColumn("period", F.format_string("%04d-%02d", F.col("year"), F.col("month")))


def with_period_index(df: DataFrame) -> DataFrame:
    """Add `period_index`, months since year 0 (year * 12 + month - 1), for ordering by time."""
    return df.withColumn("period_index", F.col("year") * 12 + F.col("month") - 1)


def with_day_index(df: DataFrame) -> DataFrame:
    """Add `period_index`, days since 1970-01-01, for ordering daily rows by time."""
    return df.withColumn("period_index", F.unix_date(F.col("date")))


def with_day_features(df: DataFrame) -> DataFrame:
    """Add the day model's calendar inputs from `date`: year, month, day_of_week, day_of_month.

    `day_of_week` is Spark's dayofweek: 1 = Sunday ... 7 = Saturday.
    """
    return df.withColumns(
        {
            "year": F.year("date"),
            "month": F.month("date"),
            "day_of_week": F.dayofweek("date"),
            "day_of_month": F.dayofmonth("date"),
        }
    )


def fill_missing_days(df: DataFrame) -> DataFrame:
    """Daily totals with every missing day of each series' span added as quantity 0.0.

    The span is each store x product's own first to last sale date, not the upload's overall
    span: a product launched late or delisted early is not taught that it sold nothing before
    or after it existed. Adds `filled` (True for an added day) so callers can count the cells.
    Needs `DAY_KEYS` and `quantity`.
    """
    spans = df.groupBy(*_SERIES).agg(F.min("date").alias("first"), F.max("date").alias("last"))
    calendar = spans.select(*_SERIES, F.explode(F.sequence("first", "last")).alias("date"))
    return calendar.join(df.withColumn("filled", F.lit(False)), list(DAY_KEYS), "left").select(
        *DAY_KEYS,
        F.coalesce(F.col("quantity"), F.lit(0.0)).alias("quantity"),
        F.coalesce(F.col("filled"), F.lit(True)).alias("filled"),
    )


def seasonal_naive(df: DataFrame) -> DataFrame:
    """Add `baseline`: the quantity of the same store, product and month one year earlier."""
    earlier = df.select(
        "store_id",
        "product_id",
        (F.col("year") + 1).alias("year"),
        "month",
        F.col("quantity").alias("baseline"),
    )
    return df.join(earlier, list(KEYS), "left")


def _earlier(df: DataFrame, name: str, key: str, season: int) -> DataFrame:
    """`df`'s quantity as `name`, keyed by series and `key` = the period `season` periods later."""
    return df.select(
        *_SERIES, (F.col("period_index") + season).alias(key), F.col("quantity").alias(name)
    )


def seasonal_changes(df: DataFrame, season: int = SEASON) -> DataFrame:
    """Add `change`: |quantity - the same series' quantity a season earlier| (null without one).

    A season is 12 months (monthly rows) or `DAY_SEASON` days (daily rows). Its mean over a fit
    period is the in-sample MAE of the seasonal-naive forecast (MASE's scale). Needs `period_index`.
    """
    earlier = _earlier(df, "year_ago", "period_index", season)
    return (
        df.join(earlier, [*_SERIES, "period_index"], "left")
        .withColumn("change", F.abs(F.col("quantity") - F.col("year_ago")))
        .drop("year_ago")
    )


def window_rows(history: DataFrame, season: int = SEASON) -> Callable[[DataFrame], DataFrame]:
    """Backtest windows (window, origin, first, last) -> `history`'s rows in each window.

    Each row gets `seasonal`, the seasonal-naive forecast made at the window's origin: the value
    season * ceil((t - origin) / season) periods before period t, the latest same-season value
    known then (12 months for monthly rows; 364 days, the same weekday, for daily rows).
    `history` needs `period_index`; the windows frame is small and broadcast.
    """

    def rows(windows: DataFrame) -> DataFrame:
        inside = (F.col("period_index") >= F.col("first")) & (
            F.col("period_index") <= F.col("last")
        )
        lag = (F.floor((F.col("period_index") - F.col("origin") - 1) / season) + 1) * season
        known = history.select(
            *_SERIES,
            F.col("period_index").alias("seasonal_from"),
            F.col("quantity").alias("seasonal"),
        )
        return (
            history.join(F.broadcast(windows), inside)
            .withColumn("seasonal_from", (F.col("period_index") - lag).cast("int"))
            .join(known, [*_SERIES, "seasonal_from"], "left")
            .drop("seasonal_from")
        )

    return rows
