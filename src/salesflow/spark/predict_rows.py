"""A prediction that keeps the user's rows, as DataFrame steps (the shape of
`salesflow.serving.prediction_rows`; the in-process twin is `salesflow.serving.predict_csv`).

    raw -> numbered -> (validate) -> row_keys        one key (or a drop reason) per input row
    row_keys -> monthly_input -> predict_frame       the months to score, as the per-month path
    numbered, row_keys, scored -> answer_rows(...)   the input's columns, then the answers
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from salesflow.serving.prediction_rows import DROPPED_COLUMN, FIRST_LINES, Drops
from salesflow.spark.transforms import KEYS, QUANTITY_REASONS

__all__ = ["ROW", "answer_rows", "drops_of", "monthly_input", "numbered", "row_keys"]

#: The input row's position (increasing in file order; partitions keep the file's order).
ROW = "__salesflow_row"
#: Prefixes of the keys and the answers while they are joined to the input.
_KEY, _ANSWER, _NAME = "__salesflow_key_", "__salesflow_answer_", "__salesflow_name_"
#: The row's 0-based ordinal among the data records.
_ORDINAL = "__salesflow_ordinal"
#: monotonically_increasing_id puts the partition id in the bits above these.
_PARTITION_SHIFT = 33

Transform = Callable[[DataFrame], DataFrame]


def numbered(df: DataFrame) -> DataFrame:
    """`df` with ROW, increasing in the input's order."""
    return df.withColumn(ROW, F.monotonically_increasing_id())


def _usable() -> Column:
    reason = F.col("reject_reason")
    return reason.isNull() | reason.isin(*QUANTITY_REASONS)


def row_keys(validated: DataFrame) -> DataFrame:
    """Per validated input row: ROW, its month's keys and quantity (null keys when dropped), and
    `dropped_reason` (null when the row is scored)."""
    usable, ok = _usable(), F.col("reject_reason").isNull()
    return validated.select(
        ROW,
        *[F.when(usable, F.col(k)).alias(k) for k in ("store_id", "product_id")],
        F.when(usable, F.year("date")).alias("year"),
        F.when(usable, F.month("date")).alias("month"),
        F.when(ok, F.col("quantity")).alias("quantity"),
        F.when(~usable, F.col("reject_reason")).alias(DROPPED_COLUMN),
    )


def monthly_input(keys: DataFrame) -> DataFrame:
    """The months to score: total quantity per store, product and month of the scored rows."""
    kept = keys.filter(F.col(DROPPED_COLUMN).isNull())
    return kept.groupBy(*KEYS).agg(F.sum("quantity").alias("quantity"))


def answer_rows(
    keys: DataFrame,
    scored: DataFrame,
    input_columns: Sequence[str],
    names: Mapping[str, str],
    labels: Sequence[tuple[str, str, DataFrame]] = (),
) -> Transform:
    """The numbered input -> one answer row per input row, in the input's order: its columns,
    the name columns it lacks (`labels`: column, id column, a frame of `id`, `name`), then its
    month's answer renamed as `names` says (`salesflow.serving.prediction_rows`)."""
    # The input may use any name (store_id untrimmed, even predicted_quantity): the keys and the
    # answers join under private names and take their answer names in the last projection.
    key_cols = [F.col(k).alias(_KEY + k) for k in KEYS]
    row_keys_ = keys.select(
        F.col(ROW).alias(_KEY + ROW), *key_cols, F.col(DROPPED_COLUMN).alias(_KEY + DROPPED_COLUMN)
    )
    answer_cols = [c for c in names if c != DROPPED_COLUMN]
    answers = scored.select(
        *key_cols, *[F.col(c).alias(_ANSWER + c) for c in answer_cols if c not in KEYS]
    )

    def step(raw: DataFrame) -> DataFrame:
        on_key = [F.col(_KEY + ROW) == F.col(ROW)]
        joined = raw.join(row_keys_, on_key, "left").join(answers, [_KEY + k for k in KEYS], "left")
        for column, id_column, frame in labels:
            named = frame.select(
                F.col("id").alias(_NAME + id_column), F.col("name").alias(_NAME + column)
            )
            on_id = F.col(_KEY + id_column) == F.col(_NAME + id_column)
            joined = joined.join(F.broadcast(named), on_id, "left")
        return joined.orderBy(ROW).select(
            *[F.col(f"`{c}`") for c in input_columns],
            *[F.col(_NAME + column).alias(column) for column, _, _ in labels],
            *[F.col(_ANSWER + c).alias(names[c]) for c in answer_cols],
            F.col(_KEY + DROPPED_COLUMN).alias(names[DROPPED_COLUMN]),
        )

    return step


def _ordinals(raw: DataFrame) -> DataFrame:
    """ROW and the row's 0-based ordinal, from each partition's row count (a small collect)."""
    part = F.shiftright(F.col(ROW), _PARTITION_SHIFT)
    counts = sorted(
        (int(r[0]), int(r[1]))
        for r in raw.groupBy(part).count().collect()  # one row per part
    )
    offsets, total = [], 0
    for partition, count in counts:
        offsets.append((partition, total))
        total += count
    table = raw.sparkSession.createDataFrame(offsets or [(0, 0)], "part long, offset long")
    within = F.col(ROW) - F.shiftleft(F.col("part"), _PARTITION_SHIFT)
    return (
        raw.select(ROW, part.alias("part"))
        .join(F.broadcast(table), "part")
        .select(ROW, (F.col("offset") + within).alias(_ORDINAL))
    )


def drops_of(raw: DataFrame, keys: DataFrame) -> Drops:
    """The dropped rows' counts per reason and first line numbers (the record's ordinal + 2, the
    header being line 1: exact unless a quoted field spans lines)."""
    dropped = keys.filter(F.col(DROPPED_COLUMN).isNotNull()).select(ROW, DROPPED_COLUMN)
    with_ordinal = dropped.join(_ordinals(raw), ROW)
    rank = F.row_number().over(Window.partitionBy(DROPPED_COLUMN).orderBy(_ORDINAL))
    counts = {r[0]: int(r[1]) for r in dropped.groupBy(DROPPED_COLUMN).count().collect()}
    first = (
        with_ordinal.withColumn("rank", rank)
        .filter(F.col("rank") <= FIRST_LINES)
        .orderBy(DROPPED_COLUMN, _ORDINAL)
        .collect()
    )
    lines: dict[str, list[int]] = {}
    for r in first:
        lines.setdefault(r[DROPPED_COLUMN], []).append(int(r[_ORDINAL]) + 2)
    return Drops(counts, lines)
