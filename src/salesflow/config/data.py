"""Settings of where data lives and how Spark trains on it: storage, Spark, training and the model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

__all__ = ["Candidate", "SparkSettings", "StorageSettings", "TrainingSettings"]

#: The models a training can let compete (`TrainingSettings.candidates`).
Candidate = Literal[
    "forest", "original", "AutoETS", "AutoTheta", "AutoARIMA", "SeasonalNaive", "Combination"
]
#: The default competition. The original pipeline is left out (selectable by name): it was never
#: the best method on any dataset of the accuracy benchmark (2026-12-08, bench/results/accuracy.json)
#: and adds three forest refits to every training; AutoARIMA too: 4x the others' cost together.
DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    "forest",
    "AutoETS",
    "AutoTheta",
    "SeasonalNaive",
    "Combination",
)


class StorageSettings:
    """Local state, object storage for uploads and the warehouse Spark writes to."""

    data_dir: Path = Field(
        Path("data"),
        description="Folder for local state: object store, warehouse, databases, logs, token.",
    )
    storage_url: str = Field(
        "",
        description="Where uploaded files are stored: file:///abs/folder or s3://bucket/prefix. "
        "Empty means file://<data_dir>/objects.",
    )
    warehouse_url: str = Field(
        "",
        description="Where Spark-written data lives (curated history, models, outputs). "
        "Empty means file://<data_dir>/warehouse.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible service (MinIO, moto); empty for AWS."
    )
    s3_region: str | None = Field(None, description="S3 region; empty uses the AWS default chain.")
    s3_part_size: int = Field(
        # boto3's upload_file default. 1 GB to moto here, every variant in each round: 8 MiB x 3
        # in flight 0.91-0.94x boto3, 8 x 4 0.96x, 10 x 2 0.87-0.92x, 7 x 3 0.85x, 5 x 4 0.75-0.79x
        # (the server's work per part). 8 x 3 holds 24 MiB in flight, 4 more than 5 x 4: the upload
        # service made room (preview.PIECE_BYTES, multipart.MultipartForm.close). 10,000 parts cap an
        # object at ~78 GiB.
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Multipart part size in bytes (>= 5 MiB); memory per upload is about "
        "part size x s3_max_concurrency. S3 allows 10,000 parts: raise it for objects > 78 GiB.",
    )
    s3_max_concurrency: int = Field(3, ge=1, description="Multipart parts uploaded in parallel.")
    s3_multipart_crc32: bool = Field(
        True,
        description="Declare CRC32 checksums on multipart uploads, as boto3's upload_file does: S3 "
        "checks each part's and keeps their composite. Turn off only for an S3-compatible store "
        "that refuses x-amz-checksum-algorithm.",
    )


class SparkSettings:
    """The Spark session: master, resources, JVM start-up and how CSV files are read."""

    spark_master: str = Field(
        "local[*]", description="Spark master: local[*], spark://, yarn, k8s://."
    )
    spark_app_name: str = Field("salesflow", description="Spark application name.")
    spark_shuffle_partitions: int = Field(
        4,
        ge=1,
        description="spark.sql.shuffle.partitions. Spark's default 200 makes a 20k-row job ~3x "
        "slower on 2 cores; aggregates here are small.",
    )
    spark_driver_memory: str = Field("2g", description="spark.driver.memory for local sessions.")
    spark_driver_host: str = Field(
        "127.0.0.1", description="Address the Spark driver binds to and advertises to executors."
    )
    spark_log_level: str = Field("ERROR", description="Spark log level.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Any extra spark.* options, as JSON: {"spark.executor.memory": "4g"}. '
        "spark.driver.extraJavaOptions is added to salesflow's own (Derby's folder), not "
        "replacing it.",
    )
    spark_class_archive: bool = Field(
        True,
        description="Start Spark's JVM from a class-data-sharing archive of the classes it loads "
        "(recorded once, by the first process that starts Spark without one, when it exits): a "
        "new JVM starts seconds faster.",
    )
    spark_class_archive_dir: Path | None = Field(
        None,
        description="Folder of that archive (about 200 MB); empty means $XDG_CACHE_HOME/salesflow "
        "or ~/.cache/salesflow.",
    )
    spark_jit: Literal["auto", "full", "quick"] = Field(
        "auto",
        description="JIT compilers of Spark's driver JVM. full: the JVM's default (C1, then C2 for "
        "hot code; best for servers and large inputs). quick: C1 only (-XX:TieredStopAtLevel=1): "
        "far less compiling, so a short job finishes sooner (a new-JVM 20k-row training ~40% "
        "faster) but a large scan runs up to 2x slower. auto: quick for a one-shot command "
        "(train, predict) reading local files under 256 MB in all, full otherwise, and full "
        "for a training whose input shows more stores or products than max_bins (its forest "
        "fits, not its scan, are then the long part).",
    )
    spark_csv_multiline: bool = Field(
        True,
        description="Let a quoted CSV field hold a line break. A local file without one is read "
        "split across cores anyway (it is scanned first); False also splits files that have one "
        "(or s3a:// objects, which are not scanned), and such a field then breaks its row in two.",
    )
    spark_s3a: bool = Field(
        False,
        description="Spark has hadoop-aws on its classpath: read s3:// uploads as s3a:// directly "
        "instead of staging them to a local file.",
    )


class TrainingSettings:
    """The data contract's reject limit, the model fitted, its evaluation and its promotion."""

    max_reject_fraction: float = Field(
        0.05, ge=0, le=1, description="A job fails when more than this share of rows is rejected."
    )
    history_mode: Literal["replace", "append", "reject"] = Field(
        "replace",
        description="What an upload does to store x day cells the curated history holds already: "
        "replace (its rows supersede the earlier rows of those cells: a corrected re-export), "
        "append (its rows add to them: a feed cut into increments), reject (the upload is "
        "refused before training, naming the overlap). An upload can override it.",
    )
    granularity: Literal["month", "day", "both"] = Field(
        "month",
        description="Forecast granularity: month totals, day quantities, or both (month then day "
        "from one read of the data, with a day-vs-month coherence check).",
    )
    regressor: Literal["random_forest", "gbt"] = Field(
        "random_forest", description="MLlib regressor fitted on quantity."
    )
    num_trees: int = Field(20, ge=1, description="Trees in the random forest (or GBT iterations).")
    max_depth: int = Field(
        8,
        ge=1,
        le=30,
        description="Maximum tree depth. 8 beats the seasonal-naive baseline on generated data; "
        "5 does not (measured on six seeds).",
    )
    max_bins: int = Field(
        32, ge=2, description="Tree bins; raised automatically to the number of stores/products."
    )
    seed: int = Field(42, description="Random seed for model fitting.")
    candidates: list[Candidate] = Field(
        default_factory=lambda: list(DEFAULT_CANDIDATES),
        min_length=1,
        description="Models a training lets compete; the lowest backtest WAPE wins. forest: the "
        "forest of regressor/num_trees/max_depth above; original: the original project's "
        "pipeline exactly (a random forest with Spark's defaults); statistical: "
        "AutoETS, AutoTheta, AutoARIMA, SeasonalNaive, Combination (per series, statsforecast). "
        'JSON list, e.g. ["original"] trains the original pipeline alone.',
    )
    statistical_max_series: int = Field(
        2000,
        ge=0,
        description="Per-series statistical candidates compete only when the history has at most "
        "this many store x product series (their cost grows with the series; past it, the "
        "pipelines compete alone).",
    )
    forecast_horizon: int = Field(
        12,
        ge=1,
        le=60,
        description="Months a version whose winner is a statistical model answers: its forecast "
        "table holds this many months after the history; later months are refused, not "
        "extrapolated.",
    )
    forecast_horizon_days: int = Field(
        56,
        ge=1,
        le=366,
        description="Days a day model whose winner is a statistical model answers (8 weeks by "
        "default): its forecast table holds this many days after the history; later days are "
        "refused, not extrapolated.",
    )
    holdout_months: int = Field(
        6, ge=1, description="Most recent months held out to evaluate a model."
    )
    backtest_windows: int = Field(3, ge=1, description="Rolling-origin backtest windows.")
    backtest_horizon: int = Field(3, ge=1, description="Months per backtest window.")
    interval_levels: list[float] = Field(
        default_factory=lambda: [0.8, 0.95], description="Prediction-interval levels."
    )
    promotion_tolerance: float = Field(
        0.0, ge=0, description="A new model may be this much WAPE worse than the active one."
    )
    promotion_gate: bool = Field(
        True,
        description="A new model becomes active only if its backtest beats the seasonal-naive "
        "forecast and the active model. false: every new model becomes active (the gate's "
        "verdict is still recorded).",
    )
