"""Read + validate + clean + aggregate throughput: salesflow's Spark path vs DuckDB vs Polars.

Every engine does the same work on the same file, in one process: read every column as text,
parse dates (two formats) and quantities without failing on bad values, flag rejects with the
same reasons in the same order, and sum quantity per store/product/year/month with the reject
counts in the same pass (salesflow's `aggregate_with_rejects`). Runs are interleaved engine by
engine, and the results are cross-checked (rows, groups, total quantity) so a fast wrong answer
cannot win.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import Context, Report, median, missing_module, timed

NAME = "aggregate"
TITLE = "Read + clean + aggregate: salesflow (Spark, warm) vs DuckDB vs Polars"

ROWS = {"smoke": 200_000, "full": 10_000_000}
#: Measured runs per engine after one warm-up on a small file; medians are reported.
REPS = {"smoke": 2, "full": 3}
#: Goal from the project's issue for salesflow's warm Spark path.
TARGET_MB_S = 50.0
#: Read size when pulling the input into the page cache before the first timed run.
_CHUNK = 8 * 1024 * 1024

#: An engine's answer: rows read, accepted groups, accepted total quantity, rejected rows.
Answer = tuple[int, int, float, int]


@contextmanager
def _multiline_forced() -> Iterator[None]:
    """Make read_sales keep Spark's one-task multiLine reader even for a file that does not need
    it: salesflow before it scanned files for quoted line breaks (the "before" row)."""
    from salesflow.spark import read

    scan = read.needs_multiline
    read.needs_multiline = lambda _path, **_kw: True
    try:
        yield
    finally:
        read.needs_multiline = scan


def spark_multiline_path(ctx: Context) -> Callable[[Path], Answer]:
    """The same Spark job with multiLine forced on: one task per file (the previous behaviour)."""
    split = spark_path(ctx)

    def job(path: Path) -> Answer:
        with _multiline_forced():
            return split(path)

    return job


def spark_path(ctx: Context) -> Callable[[Path], Answer]:
    """salesflow's own functions on the warm session: open_sales -> read_sales -> transforms."""
    from pyspark.sql import functions as F

    from salesflow.spark.read import open_sales, read_sales
    from salesflow.spark.transforms import aggregate_with_rejects, clean, validate

    spark = ctx.spark()
    settings = ctx.settings("aggregate-spark")

    def job(path: Path) -> Answer:
        with open_sales(path.as_uri(), settings) as sales:
            summary = (
                read_sales(spark, sales.spark_path, sales.header)
                .transform(validate)
                .transform(clean)
                .transform(aggregate_with_rejects)
            )
            ok = F.col("reject_reason").isNull()
            row = summary.agg(
                F.sum("rows").alias("rows"),
                F.count(F.when(ok, 1)).alias("groups"),
                F.sum(F.when(ok, F.col("quantity"))).alias("quantity"),
                F.sum(F.when(~ok, F.col("rows"))).alias("rejected"),
            ).first()
        assert row is not None
        return (
            int(row["rows"]),
            int(row["groups"]),
            float(row["quantity"]),
            int(row["rejected"] or 0),
        )

    return job


#: DuckDB: the same validation as salesflow.spark.transforms, reason by reason, in one query.
DUCKDB_SQL = """
WITH raw AS (
  SELECT nullif(trim(store_id, ' \t\r\n'), '') AS store_id,
         nullif(trim(product_id, ' \t\r\n'), '') AS product_id,
         nullif(trim(date, ' \t\r\n'), '') AS date_text,
         nullif(trim(quantity, ' \t\r\n'), '') AS quantity_text
  FROM read_csv(?, header = true, all_varchar = true)
), typed AS (
  SELECT *,
         coalesce(try_strptime(date_text, '%Y-%m-%d'),
                  try_strptime(date_text, '%Y-%m-%d %H:%M:%S'))::DATE AS day,
         CASE WHEN isfinite(TRY_CAST(quantity_text AS DOUBLE))
              THEN TRY_CAST(quantity_text AS DOUBLE) END AS quantity
  FROM raw
), flagged AS (
  SELECT *, CASE WHEN store_id IS NULL THEN 'missing_store_id'
                 WHEN product_id IS NULL THEN 'missing_product_id'
                 WHEN day IS NULL THEN 'bad_date'
                 WHEN quantity_text IS NULL THEN 'missing_quantity'
                 WHEN quantity IS NULL THEN 'bad_quantity'
                 WHEN quantity < 0 THEN 'negative_quantity' END AS reason
  FROM typed
), summary AS (
  SELECT reason,
         CASE WHEN reason IS NULL THEN store_id END AS s,
         CASE WHEN reason IS NULL THEN product_id END AS p,
         CASE WHEN reason IS NULL THEN year(day) END AS y,
         CASE WHEN reason IS NULL THEN month(day) END AS m,
         sum(CASE WHEN reason IS NULL THEN quantity END) AS quantity,
         count(*) AS n
  FROM flagged GROUP BY ALL
)
SELECT sum(n), count(*) FILTER (WHERE reason IS NULL),
       sum(quantity) FILTER (WHERE reason IS NULL), coalesce(sum(n) FILTER (WHERE reason IS NOT NULL), 0)
FROM summary
"""


def duckdb_path(_ctx: Context) -> Callable[[Path], Answer]:
    import duckdb

    con = duckdb.connect()

    def job(path: Path) -> Answer:
        row = con.execute(DUCKDB_SQL, [str(path)]).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), float(row[2]), int(row[3])

    return job


def polars_path(_ctx: Context) -> Callable[[Path], Answer]:
    import polars as pl

    blanks = " \t\r\n"

    def text(name: str) -> pl.Expr:
        value = pl.col(name).str.strip_chars(blanks)
        return pl.when(value == "").then(None).otherwise(value).alias(name)

    def job(path: Path) -> Answer:
        raw = pl.scan_csv(path, infer_schema=False).select(
            text("store_id"), text("product_id"), text("date"), text("quantity")
        )
        number = pl.col("quantity").cast(pl.Float64, strict=False)
        typed = raw.with_columns(
            pl.coalesce(
                pl.col("date").str.strptime(pl.Date, "%Y-%m-%d", strict=False),
                pl.col("date")
                .str.strptime(pl.Datetime, "%Y-%m-%d %H:%M:%S", strict=False)
                .dt.date(),
            ).alias("day"),
            pl.when(number.is_finite()).then(number).alias("q"),
        )
        reason = (
            pl.when(pl.col("store_id").is_null()).then(pl.lit("missing_store_id"))
            .when(pl.col("product_id").is_null()).then(pl.lit("missing_product_id"))
            .when(pl.col("day").is_null()).then(pl.lit("bad_date"))
            .when(pl.col("quantity").is_null()).then(pl.lit("missing_quantity"))
            .when(pl.col("q").is_null()).then(pl.lit("bad_quantity"))
            .when(pl.col("q") < 0).then(pl.lit("negative_quantity"))
        )  # fmt: skip
        ok = pl.col("reason").is_null()
        keyed = typed.with_columns(reason.alias("reason")).select(
            "reason",
            *[pl.when(ok).then(pl.col(c)).alias(c) for c in ("store_id", "product_id")],
            pl.when(ok).then(pl.col("day").dt.year()).alias("y"),
            pl.when(ok).then(pl.col("day").dt.month()).alias("m"),
            pl.when(ok).then(pl.col("q")).alias("q"),
        )
        summary = keyed.group_by("reason", "store_id", "product_id", "y", "m").agg(
            pl.col("q").sum(), pl.len().alias("n")
        )
        out = summary.select(
            pl.col("n").sum().alias("rows"),
            ok.sum().alias("groups"),
            pl.col("q").filter(ok).sum().alias("quantity"),
            pl.col("n").filter(~ok).sum().alias("rejected"),
        ).collect()
        r = out.row(0)
        return int(r[0]), int(r[1]), float(r[2]), int(r[3] or 0)

    return job


ENGINES: dict[str, tuple[str, Callable[[Context], Callable[[Path], Answer]]]] = {
    "salesflow (Spark, warm session)": ("pyspark", spark_path),
    "salesflow, multiLine forced (before: one task per file)": ("pyspark", spark_multiline_path),
    "DuckDB": ("duckdb", duckdb_path),
    "Polars": ("polars", polars_path),
}


def _same(got: Answer, reference: Answer) -> bool:
    """Same rows, groups and rejects; the same total quantity up to float summation order."""
    close = abs(got[2] - reference[2]) <= 1e-9 * max(abs(reference[2]), 1.0)
    return got[:2] == reference[:2] and got[3] == reference[3] and close


def _timed_scan(ctx: Context, path: Path) -> float:
    """Seconds for Spark to tokenise the four columns the job uses and count them: the part of
    the Spark path that no transform can speed up."""
    from pyspark.sql import functions as F

    from salesflow.sales.contract import HEADER_PROBE_BYTES, check_header
    from salesflow.spark.read import read_sales

    with path.open("rb") as handle:
        header = check_header(handle.read(HEADER_PROBE_BYTES))
    raw = read_sales(ctx.spark(), str(path), header)
    with timed() as t:
        raw.agg(*[F.count(c) for c in ("store_id", "product_id", "date", "quantity")]).first()
    return t[0]


def _page_in(path: Path) -> None:
    """Read the file once so every engine starts from the page cache, not the disk."""
    with path.open("rb") as handle:
        while handle.read(_CHUNK):
            pass


def run(ctx: Context) -> Report:
    report = Report(NAME, TITLE, ctx.mode)
    rows = ROWS[ctx.mode]
    sales = ctx.sales_file(rows)
    small = ctx.sales_file(20_000)
    size_mb = sales.stat().st_size / 1e6
    report.notes.append(f"input: {rows:,} rows, {size_mb:.1f} MB of CSV")
    if ctx.smoke:
        report.notes.append(
            f"the {TARGET_MB_S:g} MB/s target is set for the full 10M-row file; at smoke size "
            "Spark's fixed per-job cost dominates"
        )
    jobs: dict[str, Callable[[Path], Answer]] = {}
    for label, (module, factory) in ENGINES.items():
        why = missing_module(module)
        if why:
            report.skip(label, why)
            continue
        jobs[label] = factory(ctx)
        jobs[label](small)  # warm-up: JIT, code generation, first-import costs
    _page_in(sales)
    times: dict[str, list[float]] = {label: [] for label in jobs}
    answers: dict[str, Answer] = {}
    for _ in range(REPS[ctx.mode]):
        for label, job in jobs.items():  # interleaved: noise hits every engine alike
            with timed() as t:
                answers[label] = job(sales)
            times[label].append(t[0])
    reference = answers.get(next(iter(ENGINES)))
    results: dict[str, dict[str, Any]] = {}
    for label in jobs:
        seconds = median(times[label])
        got = answers[label]
        agrees = reference is not None and _same(got, reference)
        results[label] = report.add(
            engine=label,
            rows=got[0],
            groups=got[1],
            rejected=got[3],
            seconds=seconds,
            mb_per_s=size_mb / seconds,
            rows_per_s=got[0] / seconds,
            same_answer=agrees,
        )
    spark_label = next(iter(ENGINES))
    if spark_label in results:
        floor = [_timed_scan(ctx, sales) for _ in range(REPS[ctx.mode])]
        report.add(
            engine="Spark CSV scan only (the floor: no validation, no grouping)",
            rows=rows,
            seconds=median(floor),
            mb_per_s=size_mb / median(floor),
            rows_per_s=rows / median(floor),
        )
        spark_rate = results[spark_label]["mb_per_s"]
        share = median(floor) / results[spark_label]["seconds"]
        bound = (
            "the JVM's row-at-a-time CSV parser bounds the Spark figure"
            if share >= 0.5
            else "the validation and grouping expressions, not the CSV parser, bound the Spark figure"
        )
        report.notes.append(
            f"Spark's CSV scan alone (tokenising the four used columns, no validation or "
            f"grouping) takes {share:.0%} of the salesflow job: {bound}"
        )
        target = report.target("salesflow warm aggregate", spark_rate, TARGET_MB_S, "MB/s")
        report.headline(
            f"read+clean+aggregate {rows:,} rows ({size_mb:.0f} MB), warm Spark",
            f"{spark_rate:.3g} MB/s",
            target,
        )
        for label, row in results.items():
            if label == spark_label:
                continue
            ratio = row["mb_per_s"] / spark_rate
            report.ratios[f"{label} / salesflow"] = round(ratio, 2)
            report.headline(
                f"same aggregation in {label}",
                f"{row['mb_per_s']:.3g} MB/s ({ratio:.1f}x Spark)",
            )
    if not all(r["same_answer"] for r in results.values()):
        report.notes.append("engines disagree on the answer: see rows/groups/rejected columns")
    return report
