"""Predictions from a registered model: score a sales CSV, a prepared frame, or a future calendar.

`predict` reads a CSV in the upload format (quantity optional), aggregates it like training does,
and scores it with the active (or a named) model version: one row per input row in its order
(`salesflow.spark.predict_rows`), or one per store/product/month with `per_month`. `predict_frame` is the warm-session entry
point the job server uses for large files; fitted models are cached per version folder (versions
are immutable). Answers follow `salesflow.serving.model`'s rule (fallback means for unseen ids, intervals,
lineage columns), so this path and the in-process one (`salesflow.serving.predict_csv`) agree.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import secrets
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.ml.feature import StringIndexerModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from salesflow.config import Settings, get_settings
from salesflow.errors import InputError, ModelError, SalesflowError
from salesflow.registry import ModelRegistry, ModelVersion
from salesflow.sales import names as names_table
from salesflow.serving.model import DEFAULT_LEVELS, ModelFacts, output_columns
from salesflow.serving.predict_csv import escape_formula_text
from salesflow.serving.prediction_rows import Drops, answer_names, filled_names, refuse_empty
from salesflow.spark import answer, predict_rows
from salesflow.spark.curated import curated_path
from salesflow.spark.read import open_sales, read_sales
from salesflow.spark.session import get_spark, input_bytes
from salesflow.spark.transforms import (
    KEYS,
    validate,
)
from salesflow.storage import local_path_of

__all__ = [
    "OUTPUT_COLUMNS",
    "PredictResult",
    "escape_formula_text",
    "future_frame",
    "load_model",
    "main",
    "model_labels",
    "predict",
    "predict_frame",
    "to_records",
    "write_csv",
]

log = logging.getLogger(__name__)

#: The columns of a prediction for a model with the default interval levels (0.8 and 0.95).
OUTPUT_COLUMNS: tuple[str, ...] = tuple(output_columns(DEFAULT_LEVELS))
#: Fitted models kept in memory; loading one costs about a second, each holds a few MB of trees.
_CACHE_SIZE = 4
_cache: OrderedDict[str, PipelineModel] = OrderedDict()
_cache_lock = threading.Lock()
#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection");
#: the Java regex twin of forecast_csv.escape_formula_text.
_FORMULA_START = r"^[=+\-@\t\r]"
#: ...unless it is a plain number, such as a negative quantity.
_PLAIN_NUMBER = r"^[+-]?[0-9]+(\.[0-9]+)?$"


@dataclass(frozen=True)
class PredictResult:
    """A scored frame (`output_columns`, sorted), its row count, the ids the model never saw,
    and the model's lineage and notes (what its metadata lacked)."""

    version: str
    frame: DataFrame
    rows: int
    unknown_stores: list[str]
    unknown_products: list[str]
    lineage: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    drops: Drops = field(default_factory=Drops)


def load_model(model_version: ModelVersion) -> PipelineModel:
    """The fitted pipeline of a version, from the in-process cache when possible."""
    key = str(model_version.pipeline_path)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if not model_version.pipeline_path.is_dir():
        raise ModelError(f"model {model_version.version} has no saved pipeline at {key}")
    model = PipelineModel.load(key)
    with _cache_lock:
        _cache[key] = model
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def model_labels(model: PipelineModel) -> tuple[list[str], list[str]]:
    """The store and product ids a fitted pipeline was trained on."""
    stores, products = model.stages[0], model.stages[1]
    assert isinstance(stores, StringIndexerModel) and isinstance(products, StringIndexerModel)
    return list(stores.labelsArray[0]), list(products.labelsArray[0])


def predict_frame(
    model_version: ModelVersion, df: DataFrame, facts: ModelFacts | None = None
) -> DataFrame:
    """Score a frame of store_id, product_id, year, month (and optionally actual `quantity`)
    with a month model version, by the answer rule of `salesflow.spark.answer` (from its
    forecast table when it has one); `facts` defaults to what the version's metadata alone says."""
    missing = [c for c in KEYS if c not in df.columns]
    if missing:
        raise InputError(f"cannot predict: column(s) {', '.join(missing)} missing from the frame")
    facts = facts or ModelFacts.of(model_version)
    if facts.granularity != "month":
        raise ModelError(
            f"model {facts.version} is a {facts.granularity} model: file predictions are monthly "
            "and need a month model; ask day forecasts with date=YYYY-MM-DD queries"
        )
    if facts.table is not None:
        table = df.sparkSession.read.parquet(str(model_version.path / facts.table.file))
        return df.transform(answer.score_table(table, facts))
    model = load_model(model_version)
    stores, products = model_labels(model)
    return df.transform(answer.score(model, facts, (len(stores), len(products))))


def predict(
    spark: SparkSession,
    settings: Settings,
    source: str,
    *,
    registry: ModelRegistry,
    version: str | None = None,
    per_month: bool = True,
) -> PredictResult:
    """Score a sales CSV (quantity optional) with the active model, or `version`: one row per
    store/product/month (`per_month`), else one per input row in its order. NothingToPredictError
    when every row is dropped."""

    model_version = registry.get(version) if version else registry.require_active()
    facts = ModelFacts.of(model_version, curated_path(settings))
    with open_sales(source, settings, require_quantity=False) as sales:
        raw = read_sales(
            spark, sales.spark_path, sales.header, multiline=settings.spark_csv_multiline
        )
        input_columns = list(raw.columns)
        raw = predict_rows.numbered(raw).localCheckpoint()  # one read, ids fixed
        typed = raw
        if "quantity" not in raw.columns:
            typed = raw.withColumn("quantity", F.lit(None).cast("string"))
        keys = typed.transform(validate).transform(predict_rows.row_keys).localCheckpoint()
        monthly = keys.transform(predict_rows.monthly_input)
        drops = predict_rows.drops_of(raw, keys)
        months = predict_frame(model_version, monthly, facts).orderBy(*KEYS).localCheckpoint()
        month_rows = months.count()
        refuse_empty(sum(drops.counts.values()) + month_rows, month_rows, drops)
        frame = months
        if not per_month:
            names = answer_names(input_columns, facts.levels)
            known = names_table.load(settings.warehouse_path / "curated")
            labels = [
                (column, id_column, _names_frame(spark, known.of(kind)))
                for column, kind, id_column in filled_names(input_columns)
            ]
            frame = raw.transform(
                predict_rows.answer_rows(keys, months, input_columns, names, labels)
            ).localCheckpoint()
    summary = months.agg(
        F.count(F.lit(1)).alias("rows"),
        F.collect_set(F.when(F.col("unknown_store"), F.col("store_id"))).alias("stores"),
        F.collect_set(F.when(F.col("unknown_product"), F.col("product_id"))).alias("products"),
    ).first()
    assert summary is not None
    result = PredictResult(
        version=model_version.version,
        frame=frame,
        rows=frame.count() if not per_month else int(summary["rows"]),
        unknown_stores=sorted(summary["stores"]),
        unknown_products=sorted(summary["products"]),
        lineage=facts.lineage,
        notes=list(facts.notes),
        drops=drops,
    )
    log.info(
        "predicted %d rows with %s (%d unknown stores, %d unknown products)",
        result.rows,
        result.version,
        len(result.unknown_stores),
        len(result.unknown_products),
    )
    return result


def _names_frame(spark: SparkSession, known: dict[str, names_table.Name]) -> DataFrame:
    """The names table of one kind as a frame of `id`, `name`."""
    rows = [(ident, name.name) for ident, name in known.items()]
    return spark.createDataFrame(rows, "id string, name string")


def to_records(df: DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as plain dicts (for JSON answers); meant for small frames."""
    return [row.asDict() for row in df.collect()]


def _escape_formula(column: Column) -> Column:
    risky = column.rlike(_FORMULA_START) & ~column.rlike(_PLAIN_NUMBER)
    return F.when(risky, F.concat(F.lit("'"), column)).otherwise(column)


def write_csv(df: DataFrame, path: str | Path) -> Path:
    """Write `df` as one CSV file with a header, atomically (temp folder, then rename).

    Text cells that a spreadsheet would run as a formula (= + - @ ...) get a leading `'`.
    """
    target = local_path_of(str(path)).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    escaped = df.select(
        *[
            _escape_formula(F.col(f.name)).alias(f.name)
            if isinstance(f.dataType, StringType)
            else F.col(f.name)
            for f in df.schema.fields
        ]
    )
    tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(8)}"
    try:
        escaped.coalesce(1).write.csv(
            str(tmp), header=True, encoding="UTF-8", escape='"', emptyValue=""
        )
        parts = sorted(tmp.glob("part-*"))
        if parts:
            os.replace(parts[0], target)
        else:  # an empty frame: Spark may write no part file at all
            target.write_text(",".join(df.columns) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def future_frame(
    spark: SparkSession,
    stores: Sequence[str],
    products: Sequence[str],
    start_period: str,
    months: int = 12,
) -> DataFrame:
    """Every store x product for `months` months from `start_period` ("YYYY-MM", included)."""
    try:
        year_text, month_text = start_period.split("-")
        year, month = int(year_text), int(month_text)
        if not 1 <= month <= 12 or len(year_text) != 4:
            raise ValueError
    except ValueError:
        raise InputError(f"start period {start_period!r} is not YYYY-MM") from None
    if months < 1:
        raise InputError(f"months must be at least 1, got {months}")
    periods = [divmod(year * 12 + month - 1 + i, 12) for i in range(months)]
    calendar = spark.createDataFrame([(y, m + 1) for y, m in periods], "year int, month int")
    store_frame = spark.createDataFrame([(s,) for s in stores], "store_id string")
    product_frame = spark.createDataFrame([(p,) for p in products], "product_id string")
    return store_frame.crossJoin(product_frame).crossJoin(calendar).select(*KEYS)


def _print_csv(df: DataFrame) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(df.columns)
    for row in df.toLocalIterator():
        writer.writerow([escape_formula_text(v) if isinstance(v, str) else v for v in row])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m salesflow.spark.predict CSV [--model V] [-o OUT]`: score a CSV with a model."""
    parser = argparse.ArgumentParser(
        prog="python -m salesflow.spark.predict", description=main.__doc__
    )
    parser.add_argument("csv", help="sales CSV: path, file:// or s3:// URL (quantity optional)")
    parser.add_argument("--model", default=None, help="model version (default: the active one)")
    parser.add_argument("-o", "--output", default=None, help="write the predictions to this CSV")
    parser.add_argument(
        "--per-month", action="store_true", help="one row per store/product/month, not per row"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    registry = ModelRegistry(settings.warehouse_path / "models")
    try:
        result = predict(
            get_spark(settings, reads=input_bytes([args.csv])),
            settings,
            args.csv,
            registry=registry,
            version=args.model,
            per_month=args.per_month,
        )
    except SalesflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.drops.counts:
        print(f"rows not scored: {result.drops.summary()}", file=sys.stderr)
    if args.output:
        print(f"wrote {write_csv(result.frame, args.output)}", file=sys.stderr)
    else:
        _print_csv(result.frame)
    print(
        f"{result.rows} rows scored with model {result.version}; unknown stores: "
        f"{len(result.unknown_stores)}, unknown products: {len(result.unknown_products)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
