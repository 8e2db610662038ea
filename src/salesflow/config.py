"""salesflow's one settings object: every URL, port, path, threshold and Spark option.

Values come from `SALESFLOW_*` environment variables or an optional `.env` file, are validated once
at start-up, and are then passed to components. No other module reads the environment.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salesflow.urls import local_path_of

__all__ = ["Settings", "get_settings", "settings_table"]


class Settings(BaseSettings):
    """All of salesflow's configuration. The README's configuration table is generated from it."""

    model_config = SettingsConfigDict(
        env_prefix="SALESFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- local state -------------------------------------------------------------------------
    data_dir: Path = Field(
        Path("data"),
        description="Folder for local state: object store, warehouse, databases, logs, token.",
    )

    # --- object storage ----------------------------------------------------------------------
    storage_url: str = Field(
        "",
        description="Where uploaded files are stored: file:///abs/folder or s3://bucket/prefix. "
        "Empty means file://<data_dir>/objects.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible service (MinIO, moto); empty for AWS."
    )
    s3_region: str | None = Field(None, description="S3 region; empty uses the AWS default chain.")
    s3_part_size: int = Field(
        # boto3's upload_file default. 1 GB to moto here, every variant in each round: 8 MiB x 3
        # in flight 0.91-0.94x boto3, 8 x 4 0.96x, 10 x 2 0.87-0.92x, 7 x 3 0.85x, 5 x 4 0.75-0.79x
        # (the server's work per part). 8 x 3 holds 24 MiB in flight, 4 more than 5 x 4: the upload
        # service made room (preview.PIECE_BYTES, multipart.MultipartForm.close). 10,000 parts cap
        # an object at ~78 GiB.
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

    # --- Spark -------------------------------------------------------------------------------
    warehouse_url: str = Field(
        "",
        description="Where Spark-written data lives (curated history, models, outputs). "
        "Empty means file://<data_dir>/warehouse.",
    )
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

    # --- data contract and training ----------------------------------------------------------
    max_reject_fraction: float = Field(
        0.05, ge=0, le=1, description="A job fails when more than this share of rows is rejected."
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

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap list. Use 127.0.0.1, not localhost: the local broker is IPv4 only.",
    )
    kafka_embedded: bool = Field(
        True, description="`salesflow up` starts the local Tansu broker on the bootstrap address."
    )
    kafka_uploads_topic: str = Field("sales.uploads", description="Topic of upload events.")
    kafka_dlq_topic: str = Field("sales.uploads.dlq", description="Dead-letter topic.")
    kafka_topic_partitions: int = Field(1, ge=1, description="Partitions of created topics.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication of created topics.")
    kafka_consumer_group: str = Field("salesflow-upload-consumer", description="Consumer group id.")
    kafka_session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="Consumer session timeout. librdkafka's 45 s default makes a new group wait "
        "~23 s for its first message on the local broker; 6 s brings that to ~3 s.",
    )
    kafka_delivery_timeout_ms: int = Field(
        10000,
        ge=2000,
        description="Producer delivery timeout (librdkafka's default is 300 s); the outbox retries.",
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description='Extra librdkafka settings, e.g. SASL/SSL: {"security.protocol": "SASL_SSL"}.',
    )

    # --- services ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface every service binds to.")
    upload_port: int = Field(8001, ge=1, le=65535, description="Upload service port.")
    jobs_port: int = Field(8002, ge=1, le=65535, description="Job server port.")
    dashboard_port: int = Field(
        8003, ge=1, le=65535, description="Dashboard port (open the link `salesflow up` prints)."
    )
    upload_service_url: str = Field(
        "",
        description="Where clients find the upload service; empty means http://host:upload_port.",
    )
    job_server_url: str = Field(
        "",
        description="Where the consumer finds the job server; empty means http://host:jobs_port.",
    )
    max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest accepted upload, enforced while streaming (413)."
    )
    jobs_concurrency: int = Field(1, ge=1, description="Training jobs run at once.")
    jobs_jit_warmup_runs: int = Field(
        10,
        ge=0,
        description="Trainings of a small generated file the job server runs in a scratch folder "
        "right after Spark starts, so the JVM has compiled Spark's code before real jobs come "
        "(a real job stops the warm-up at once). 0: none. Skipped with a cluster master.",
    )
    predict_sync_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Prediction files up to this size are answered at once; larger become jobs.",
    )
    predict_max_concurrent: int = Field(
        4,
        ge=1,
        description="Synchronous predictions run at once by the job server; more get 503 busy.",
    )
    consumer_backoff_initial_s: float = Field(
        0.5, gt=0, description="First retry delay after a transient failure."
    )
    consumer_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    consumer_give_up_s: float = Field(
        900.0, gt=0, description="After this long unavailable, an event goes to the dead letters."
    )
    http_timeout_s: float = Field(10.0, gt=0, description="Timeout of calls between services.")
    crash_point: str | None = Field(
        None,
        description="Fault tests only: fail on purpose at this named step. consumer.after_verify "
        "and consumer.after_train exit the consumer; jobs.after_accept freezes the job server "
        "(SIGSTOP) after it created a job; train.before_publish fails a Spark task in training.",
    )
    outbox_interval_s: float = Field(1.0, gt=0, description="How often the outbox relay runs.")
    reconcile_after_s: float = Field(
        600.0, gt=0, description="Re-publish uploads with no terminal state after this long."
    )
    upload_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An upload whose client sends no bytes for this long is cancelled (408).",
    )
    preview_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="The upload preview parses rows (rejects, dates, duplicates) in this many "
        "bytes of a file; beyond them it only counts lines and says `complete: false`. Python "
        "parses ~50 MB/s while storage streams ~10x faster, so parsing a whole large file would "
        "slow its upload down.",
    )
    max_field_bytes: int = Field(
        4096,
        ge=1,
        le=100_000,  # below Python's csv field cap (131072 characters)
        description="Longest accepted CSV field, in bytes; a longer one refuses the upload (400 "
        "field_too_long). It also bounds the memory a runaway quoted field can take.",
    )
    upload_max_concurrent: int = Field(
        16, ge=1, description="Uploads streamed at once; more are refused with 503 busy."
    )
    upload_malloc_arenas: int = Field(
        # Three 1 GB uploads to S3 (moto): peak RSS 138-140 MB with 2 arenas, 144-151 MB with
        # glibc's default (up to 8 per core: the pipeline and each part thread get their own).
        2,
        ge=0,
        description="glibc malloc arenas of the upload service (Linux): fewer keep its peak "
        "memory flat, its threads reusing each other's freed buffers. 0 leaves glibc's default.",
    )
    upload_mmap_threshold: int = Field(
        # Three 50 MB uploads to S3 (moto), five or six runs each: peak RSS 137-139 MB with 2 MiB,
        # 140-142 MB with glibc's moving threshold; 128 KiB: 130-132 MB, but +2 CPU-s per GB to
        # file:// (every 256 KB chunk received mapped and faulted in anew). 2 MiB: no CPU change.
        # (5 MiB parts then; with 8 MiB parts, 1 MiB: ~7 MB less at peak, +0.4 CPU-s per GB.)
        2 * 1024 * 1024,
        ge=0,
        description="Buffers of this many bytes or more get their own memory map in the upload "
        "service (Linux, glibc's M_MMAP_THRESHOLD), handed back to the system when freed. 0 "
        "leaves glibc's moving threshold, which rises with the largest buffer freed.",
    )

    # --- security ----------------------------------------------------------------------------
    auth_enabled: bool = Field(
        True, description="Require a bearer token on every endpoint except /healthz and /readyz."
    )
    auth_token: SecretStr | None = Field(
        None,
        description="The bearer token. Empty: a random one is created on first start in "
        "<data_dir>/auth-token (mode 0600) and used by the CLI automatically.",
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.storage_url:
            self.storage_url = (self.data_dir / "objects").as_uri()
        if not self.warehouse_url:
            self.warehouse_url = (self.data_dir / "warehouse").as_uri()
        if not self.upload_service_url:
            self.upload_service_url = f"http://{self.host}:{self.upload_port}"
        if not self.job_server_url:
            self.job_server_url = f"http://{self.host}:{self.jobs_port}"
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as SALESFLOW_* variables, so child processes see exactly the same values."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"SALESFLOW_{name.upper()}"] = str(value)
        return env

    @property
    def warehouse_path(self) -> Path:
        """The warehouse as a local folder (only file:// warehouses have one)."""
        return local_path_of(self.warehouse_url)


def settings_table() -> str:
    """The configuration table of the README, generated from the fields above."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "" if default in (None, "") else f"`{default}`"
        if isinstance(default, Path):
            shown = f"`{default}`"
        lines.append(f"| `SALESFLOW_{name.upper()}` | {shown} | {info.description or ''} |")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
