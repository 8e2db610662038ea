"""Reading sales CSVs and the pure transforms, on tiny frames with whole-frame assertions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import GBTRegressor, RandomForestRegressor
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from salesflow.config import Settings
from salesflow.errors import HeaderError, InputError, ObjectNotFoundError
from salesflow.sales.contract import REQUIRED_COLUMNS, check_header
from salesflow.spark.pipeline import build_pipeline
from salesflow.spark.predict import future_frame, write_csv
from salesflow.spark.read import open_sales, read_sales
from salesflow.spark.transforms import (
    aggregate_monthly,
    aggregate_with_rejects,
    clean,
    keep_for_prediction,
    parse_date,
    rejected_rows,
    seasonal_naive,
    validate,
    with_period,
)
from tests.fixtures.data import assert_df_equal, rows_of, sale, write_sales

D = dt.date


def _read(spark: SparkSession, settings: Settings, path: Path, **kw: bool) -> DataFrame:
    with open_sales(str(path), settings, **kw) as sales:
        return read_sales(spark, sales.spark_path, sales.header).localCheckpoint()


def _text_frame(spark: SparkSession, rows: Sequence[Sequence[str | None]]) -> DataFrame:
    schema = ", ".join(f"{c} string" for c in REQUIRED_COLUMNS)
    return spark.createDataFrame(rows, schema)


# --- reading ---------------------------------------------------------------------------------


def test_bom_and_crlf_do_not_leak_into_names_or_last_field(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    path = write_sales(
        tmp_path / "a.csv", [sale("3"), sale("4", "2021-02-01")], newline="\r\n", bom=True
    )
    df = _read(spark, settings, path)
    assert df.columns == list(REQUIRED_COLUMNS)
    assert_df_equal(
        df.select("product_id", "quantity", "date"),
        [("p1", "3", "2021-01-15"), ("p1", "4", "2021-02-01")],
    )


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_tab_and_semicolon_files_read_the_same(
    spark: SparkSession, settings: Settings, tmp_path: Path, sep: str
) -> None:
    path = write_sales(tmp_path / "a.csv", [sale("3"), sale("2.5", store_id="s2")], sep=sep)
    df = _read(spark, settings, path)
    assert_df_equal(
        df.select("store_id", "quantity", "date"),
        [("s1", "3", "2021-01-15"), ("s2", "2.5", "2021-01-15")],
    )


def test_any_column_order_and_extra_columns(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    columns = ["date", "comment", *reversed(REQUIRED_COLUMNS[:-1]), ""]
    row = ["2021-03-04", "hello", "7", "store s9", "s9", "1.5", "name p9", "p9", "x"]
    df = _read(spark, settings, write_sales(tmp_path / "a.csv", [row], columns=columns))
    assert df.columns[:2] == ["date", "comment"] and df.columns[-1] == "_c8"
    monthly = df.transform(validate).transform(clean)
    assert_df_equal(
        monthly,
        [("s9", "p9", D(2021, 3, 4), 7.0, None, 2021, 3)],
        ["store_id", "product_id", "date", "quantity", "reject_reason", "year", "month"],
    )


def test_timestamp_dates_and_decimal_quantities_parse(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    rows = [sale("2.5", "2021-01-31 23:59:59"), sale("10", "2021-02-01 00:00:00")]
    df = _read(spark, settings, write_sales(tmp_path / "a.csv", rows))
    assert_df_equal(
        df.transform(validate).select("date", "quantity", "reject_reason"),
        [(D(2021, 1, 31), 2.5, None), (D(2021, 2, 1), 10.0, None)],
    )


def test_header_check_runs_before_spark_and_names_missing_columns(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_text("product_id,store_id,date\np1,s1,2021-01-01\n")
    missing = "product_name, product_price, store_name, quantity"
    with pytest.raises(HeaderError, match=missing), open_sales(str(path), settings):
        pass


def test_prediction_header_may_omit_quantity() -> None:
    head = ",".join(c for c in REQUIRED_COLUMNS if c != "quantity").encode() + b"\n"
    with pytest.raises(HeaderError, match="quantity"):
        check_header(head)
    info = check_header(head, require_quantity=False)
    assert "quantity" not in info.columns and info.delimiter == ","
    minimal = check_header(b"date;store_id;product_id\n", require_quantity=False)
    assert minimal.columns == ("date", "store_id", "product_id") and minimal.delimiter == ";"
    with pytest.raises(HeaderError, match=r"missing column.*date; .*expected product_id, store_id"):
        check_header(b"store_id,product_id\n", require_quantity=False)


def test_missing_file_and_unknown_scheme_fail_clearly(settings: Settings, tmp_path: Path) -> None:
    with (
        pytest.raises(ObjectNotFoundError, match="no such file"),
        open_sales(str(tmp_path / "nope.csv"), settings),
    ):
        pass
    with pytest.raises(InputError, match="unsupported"), open_sales("ftp://x/y.csv", settings):
        pass


# --- validate --------------------------------------------------------------------------------


def test_validate_names_every_reject_reason_and_types_good_rows(spark: SparkSession) -> None:
    rows: list[Sequence[str | None]] = [
        sale("3", store_id=" s1 "),  # blanks around ids are trimmed
        sale("4", store_id=""),
        sale("4", product_id="   "),
        sale("4", date="2021-02-30"),
        sale("4", date="15/01/2021"),
        sale(""),
        sale("three"),
        sale("NaN"),
        sale("-1"),
        sale("0", date="2021-01-15 10:00:00"),
    ]
    rows.append([None] * len(REQUIRED_COLUMNS))
    df = _text_frame(spark, rows).transform(validate)
    assert_df_equal(
        df.select("store_id", "date", "quantity", "reject_reason"),
        [
            ("s1", D(2021, 1, 15), 3.0, None),
            (None, D(2021, 1, 15), 4.0, "missing_store_id"),
            ("s1", D(2021, 1, 15), 4.0, "missing_product_id"),
            ("s1", None, 4.0, "bad_date"),
            ("s1", None, 4.0, "bad_date"),
            ("s1", D(2021, 1, 15), None, "missing_quantity"),
            ("s1", D(2021, 1, 15), None, "bad_quantity"),
            ("s1", D(2021, 1, 15), None, "bad_quantity"),
            ("s1", D(2021, 1, 15), -1.0, "negative_quantity"),
            ("s1", D(2021, 1, 15), 0.0, None),
            (None, None, None, "missing_store_id"),
        ],
    )
    assert dict(df.dtypes)["quantity"] == "double" and dict(df.dtypes)["date"] == "date"


def test_parse_date_answers_as_the_two_formats_do(spark: SparkSession) -> None:
    """The shape check + cast gives what `yyyy-MM-dd` then `yyyy-MM-dd HH:mm:ss` formats give,
    except for negative years, which are now a bad date."""
    texts = [
        "2021-01-15", "2024-02-29", "2023-02-29", "2021-02-30", "2021-13-01", "2021-00-10",
        "2021-01-00", "2021-1-5", "2021-01-5", "21-01-15", "02021-01-15", "+2021-01-15",
        "-2021-01-15", "2021-01-15 10:00:00", "2021-01-15 24:00:00", "2021-01-15T10:00:00",
        "2021-01-15 junk", "2021-01-15 ", "2021", "2021-01", "15/01/2021", "2021/01/15",
        "\uff12\uff10\uff12\uff11-01-15", "0000-01-01", "0001-01-01", "9999-12-31", "", None,
    ]  # fmt: skip
    day, stamp = "yyyy-MM-dd", "yyyy-MM-dd HH:mm:ss"
    frame = spark.createDataFrame([(t,) for t in texts], "text string")
    found = frame.select(
        "text",
        parse_date(F.col("text")).alias("new"),
        F.coalesce(
            F.try_to_date(F.col("text"), day), F.to_date(F.try_to_timestamp("text", F.lit(stamp)))
        ).alias("formats"),
    )
    differ = found.filter(~F.col("new").eqNullSafe(F.col("formats")))
    # One deliberate difference: the format reads a leading minus as a year before Christ.
    as_text = differ.select(*(F.col(c).cast("string") for c in found.columns)).collect()
    assert [tuple(r) for r in as_text] == [("-2021-01-15", None, "-2021-01-15")]
    found = found.select(F.col("new").isNotNull().alias("new")).collect()
    assert sum(r.new is not None for r in found) >= 6  # the valid ones did parse


def test_rejected_rows_keep_the_original_text(spark: SparkSession) -> None:
    df = _text_frame(spark, [sale("3"), sale("-2", store_id=" s2")]).transform(rejected_rows)
    assert_df_equal(
        df.select("store_id", "quantity", "reject_reason"), [(" s2", "-2", "negative_quantity")]
    )
    assert df.columns == [*REQUIRED_COLUMNS, "reject_reason"]


def test_reject_reasons_keep_their_precedence_when_several_apply(spark: SparkSession) -> None:
    rows = [
        sale("x", "15/01/2021", store_id=" ", product_id=""),
        sale("", "15/01/2021", product_id="\r"),
        sale("", "2021-13-01"),
        sale(" \t"),
        sale("NaN"),
        sale("1e999"),
        sale("-1e-300"),
        sale(" -0 ", "2021-01-15 23:59:59"),
    ]
    df = _text_frame(spark, rows).transform(validate)
    assert_df_equal(
        df.select("reject_reason"),
        [
            ("missing_store_id",),
            ("missing_product_id",),
            ("bad_date",),
            ("missing_quantity",),
            ("bad_quantity",),
            ("bad_quantity",),
            ("negative_quantity",),
            (None,),
        ],
    )


def test_validate_parses_each_field_once_and_leaves_no_helper_columns(
    spark: SparkSession,
) -> None:
    raw = _text_frame(spark, [sale("3")]).withColumn("extra", F.lit("x"))
    df = raw.transform(validate)
    assert df.columns == [*REQUIRED_COLUMNS, "extra", "reject_reason"]
    # The optimised plan (JVM side; PySpark has no public accessor): one trim per field and
    # one date parse (shape check, date cast, timestamp fallback) and one quantity cast in all,
    # not one per CASE WHEN branch that needs it.
    plan = df._jdf.queryExecution().optimizedPlan().toString()
    names = ("trim(", "RLIKE", "try_to_timestamp", "try_cast", "isnan(")
    counts = {name: plan.count(name) for name in names}
    assert counts == {"trim(": 4, "RLIKE": 1, "try_to_timestamp": 1, "try_cast": 2, "isnan(": 1}


# --- clean and aggregate ---------------------------------------------------------------------


def test_clean_drops_names_and_price_and_adds_year_month(spark: SparkSession) -> None:
    df = _text_frame(spark, [sale("3", "2020-12-31")]).transform(validate).transform(clean)
    assert_df_equal(
        df,
        [("s1", "p1", D(2020, 12, 31), 3.0, None, 2020, 12)],
        ["store_id", "product_id", "date", "quantity", "reject_reason", "year", "month"],
    )


def test_aggregate_monthly_sums_per_store_product_month(spark: SparkSession) -> None:
    rows = [
        sale("1", "2021-01-01"),
        sale("2.5", "2021-01-31"),
        sale("4", "2021-02-01"),
        sale("8", "2021-01-10", store_id="s2"),
        sale("16", "2022-01-10"),
    ]
    df = _text_frame(spark, rows).transform(validate).transform(clean)
    assert_df_equal(
        df.transform(aggregate_monthly),
        [
            ("s1", "p1", 2021, 1, 3.5),
            ("s1", "p1", 2021, 2, 4.0),
            ("s2", "p1", 2021, 1, 8.0),
            ("s1", "p1", 2022, 1, 16.0),
        ],
        ["store_id", "product_id", "year", "month", "quantity"],
    )


def test_aggregate_with_rejects_gives_aggregate_and_counts_in_one_pass(
    spark: SparkSession,
) -> None:
    rows = [
        sale("1", "2021-01-01"),
        sale("2", "2021-01-20"),
        sale("x"),
        sale("-3", "2021-05-01"),
        sale("-4", "2021-06-01", store_id="s7"),
    ]
    df = _text_frame(spark, rows).transform(validate).transform(clean)
    assert_df_equal(
        df.transform(aggregate_with_rejects),
        [
            (None, "s1", "p1", 2021, 1, 3.0, 2, D(2021, 1, 1), D(2021, 1, 20)),
            ("bad_quantity", None, None, None, None, None, 1, None, None),
            ("negative_quantity", None, None, None, None, None, 2, None, None),
        ],
        [
            "reject_reason",
            "store_id",
            "product_id",
            "year",
            "month",
            "quantity",
            "rows",
            "first_date",
            "last_date",
        ],
    )


def test_keep_for_prediction_blanks_bad_quantities_and_drops_bad_keys(
    spark: SparkSession,
) -> None:
    rows = [sale("1"), sale("oops"), sale("2", date="never"), sale("5", product_id="")]
    df = _text_frame(spark, rows).transform(validate).transform(keep_for_prediction)
    assert_df_equal(df.select("product_id", "quantity"), [("p1", 1.0), ("p1", None)])
    assert "reject_reason" not in df.columns


def test_seasonal_naive_takes_the_same_month_a_year_earlier(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            ("s1", "p1", 2020, 3, 10.0),
            ("s1", "p1", 2021, 3, 12.0),
            ("s1", "p1", 2021, 4, 7.0),
            ("s2", "p1", 2021, 3, 5.0),
        ],
        "store_id string, product_id string, year int, month int, quantity double",
    )
    assert_df_equal(
        df.transform(seasonal_naive),
        [
            ("s1", "p1", 2020, 3, 10.0, None),
            ("s1", "p1", 2021, 3, 12.0, 10.0),
            ("s1", "p1", 2021, 4, 7.0, None),
            ("s2", "p1", 2021, 3, 5.0, None),
        ],
        ["store_id", "product_id", "year", "month", "quantity", "baseline"],
    )


def test_with_period_formats_year_month(spark: SparkSession) -> None:
    df = spark.createDataFrame([(2021, 3), (1999, 12)], "year int, month int")
    assert rows_of(df.transform(with_period), ["period"]) == [("1999-12",), ("2021-03",)]


# --- writing and calendars -------------------------------------------------------------------


def test_write_csv_is_one_file_and_escapes_formulas(spark: SparkSession, tmp_path: Path) -> None:
    df = spark.createDataFrame(
        [("=HYPERLINK(1)", -2.5, "-3"), ("@SUM(A1)", 1.0, "+x"), ("plain", 0.0, None)],
        "name string, value double, text string",
    )
    out = write_csv(df, tmp_path / "out" / "p.csv")
    assert out == tmp_path / "out" / "p.csv"
    assert [p.name for p in out.parent.iterdir()] == ["p.csv"]  # no temp folder left
    assert out.read_text().splitlines() == [
        "name,value,text",
        "'=HYPERLINK(1),-2.5,-3",
        "'@SUM(A1),1.0,'+x",
        "plain,0.0,",
    ]


def test_write_csv_of_an_empty_frame_writes_the_header(spark: SparkSession, tmp_path: Path) -> None:
    out = write_csv(spark.createDataFrame([], "a string, b int"), tmp_path / "e.csv")
    assert out.read_text().splitlines() == ["a,b"]


def test_future_frame_is_every_store_product_for_n_months(spark: SparkSession) -> None:
    df = future_frame(spark, ["s1", "s2"], ["p1"], "2021-11", months=3)
    assert_df_equal(
        df,
        [(s, "p1", y, m) for s in ("s1", "s2") for y, m in ((2021, 11), (2021, 12), (2022, 1))],
        ["store_id", "product_id", "year", "month"],
    )
    with pytest.raises(InputError, match="YYYY-MM"):
        future_frame(spark, ["s1"], ["p1"], "2021-13")


# --- the pipeline ------------------------------------------------------------------------------


def test_pipeline_stages_and_bins_cover_big_catalogues(
    spark: SparkSession, settings: Settings
) -> None:
    gbt = settings.model_copy(update={"regressor": "gbt", "num_trees": 7, "max_depth": 4})
    stages = build_pipeline(gbt, n_stores=40, n_products=500).getStages()
    stores, products, assembler, regressor = stages
    assert isinstance(stores, StringIndexer) and isinstance(products, StringIndexer)
    assert isinstance(assembler, VectorAssembler)
    assert (stores.getInputCol(), stores.getOutputCol(), stores.getHandleInvalid()) == (
        "store_id",
        "store",
        "keep",
    )
    assert (products.getInputCol(), products.getHandleInvalid()) == ("product_id", "keep")
    assert assembler.getInputCols() == ["month", "year", "store", "product"]
    assert isinstance(regressor, GBTRegressor)
    assert (regressor.getMaxIter(), regressor.getMaxDepth(), regressor.getMaxBins()) == (7, 4, 502)
    assert regressor.getLabelCol() == "quantity"
    forest = build_pipeline(settings, 3, 3).getStages()[-1]
    assert isinstance(forest, RandomForestRegressor)
    assert (forest.getNumTrees(), forest.getMaxBins(), forest.getSeed()) == (20, 32, 42)
    assert forest.getFeatureSubsetStrategy() == "all"
