"""The process's one SparkSession, tuned for salesflow's input sizes and configurable for a cluster."""

from __future__ import annotations

import csv
import logging
import os
import sys
import threading
from collections.abc import Sequence

from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.sales.contract import check_header
from salesflow.spark import class_archive
from salesflow.spark.java import check_java
from salesflow.storage import local_path_of

__all__ = [
    "check_java",
    "get_spark",
    "input_bytes",
    "input_categories",
    "jit_option",
    "spark_conf",
    "stop_spark",
]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_session: SparkSession | None = None

#: spark_jit "auto": a one-shot job reading less than this starts its JVM with the quick JIT.
#: Measured cold (new JVM) trainings, full vs quick: 20k rows (1.7 MB) 23 vs 13-16 s, 1M rows
#: (87 MB) 25 vs 19 s, 10M rows (873 MB) 37 vs 44 s.
QUICK_JIT_MAX_BYTES = 256 * 1024 * 1024
#: Bytes of each input a one-shot training samples for its catalogue (`input_categories`).
CATEGORY_SAMPLE_BYTES = 1024 * 1024
#: The JVM option of the quick JIT: C1 only, no C2. On 2 cores C2 compiles Spark's code base for
#: minutes after start (13 s of CPU in a first training, still ~4 s in the fifth) on the cores
#: the job needs.
QUICK_JIT = "-XX:TieredStopAtLevel=1"
#: Spark's cache of compiled generated code holds 100 classes by default; one training
#: generates ~100, so each run recompiled ~45 of them (~17 ms each, then JIT-compiled again).
CODEGEN_CACHE_ENTRIES = 1000


def spark_conf(settings: Settings, java_options: str = "") -> dict[str, str]:
    """Every Spark option salesflow sets, with the user's `spark_conf` applied last (JVM options
    added to salesflow's rather than replacing them). `java_options`: more driver JVM options
    (the class archive's)."""
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": settings.spark_app_name,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.driver.host": settings.spark_driver_host,
        "spark.driver.bindAddress": settings.spark_driver_host,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
        # Python workers fork from a daemon that has imported statsforecast (python_daemon.py).
        "spark.python.daemon.module": "salesflow.spark.python_daemon",
        # Keep Spark's scratch files and Derby/metastore leftovers under the data folder.
        "spark.local.dir": str(settings.data_dir / "spark-tmp"),
        "spark.sql.warehouse.dir": str(settings.data_dir / "spark-warehouse"),
        "spark.driver.extraJavaOptions": " ".join(
            filter(None, [f"-Dderby.system.home={settings.data_dir / 'derby'}", java_options])
        ),
    }
    # The user's JVM options come after salesflow's (a later -D wins), instead of replacing them.
    user = dict(settings.spark_conf)
    java_options = "spark.driver.extraJavaOptions"
    if user.get(java_options):
        user[java_options] = f"{conf[java_options]} {user[java_options]}"
    conf.update(user)
    return conf


def input_bytes(urls: Sequence[str]) -> int | None:
    """What a one-shot job on `urls` reads: their total size, or None unless all are local files."""
    total = 0
    for url in urls:
        try:
            total += local_path_of(url).stat().st_size
        except (InputError, OSError):
            return None  # s3:// and the like, or missing (the job itself says so)
    return total


def input_categories(urls: Sequence[str]) -> int | None:
    """The most distinct store ids or product ids in the first MiB of any of `urls`: a sample of
    the catalogue a training will fit. None when an input is not a readable local sales file."""
    most = 0
    for url in urls:
        try:
            with local_path_of(url).open("rb") as src:
                head = src.read(CATEGORY_SAMPLE_BYTES)
            header = check_header(head)
        except (InputError, OSError):
            return None  # remote, missing or malformed: the job itself says what is wrong
        lines = head.decode("utf-8", errors="replace").splitlines()[1:-1]  # the last may be cut
        store, product = header.columns.index("store_id"), header.columns.index("product_id")
        stores: set[str] = set()
        products: set[str] = set()
        for row in csv.reader(lines, delimiter=header.delimiter):
            if len(row) == len(header.columns):
                stores.add(row[store])
                products.add(row[product])
        most = max(most, len(stores), len(products))
    return most


def jit_option(settings: Settings, reads: int | None = None, categories: int | None = None) -> str:
    """The driver JVM's JIT option: QUICK_JIT or "" (the JVM's default, C1 then C2).

    `reads`: the bytes a one-shot job reads (`input_bytes`); None for a server or an unknown size.
    `categories`: for a training, its `input_categories`. More stores or products than
    settings.max_bins make every forest fit search more bins per split, so the fits, not the scan,
    are the long part, and they want C2: a 200 x 2,000 catalogue's 20k-row training (1.7 MB) took
    244 s with the quick JIT, 135 s with the full one.
    """
    mode = settings.spark_jit
    if mode == "auto":
        small = reads is not None and reads < QUICK_JIT_MAX_BYTES
        simple = categories is None or categories <= settings.max_bins
        mode = "quick" if small and simple else "full"
    return QUICK_JIT if mode == "quick" else ""


def get_spark(
    settings: Settings, *, reads: int | None = None, categories: int | None = None
) -> SparkSession:
    """The process's SparkSession, created on first use (one JVM per process).

    `reads` and `categories`: for a one-shot command, the bytes its job reads (`input_bytes`) and,
    for a training, the catalogue its input shows (`input_categories`); they pick the JIT with
    settings.spark_jit "auto" (`jit_option`) and matter only when this call starts the session.
    """
    global _session
    with _lock:
        if _session is not None:
            return _session
        check_java()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        archive = class_archive.plan(settings)
        jit = jit_option(settings, reads, categories)
        java_options = " ".join(filter(None, [archive.java_option, jit]))
        # Python workers (applyInPandas in spark/statistical.py) run this interpreter, so they see
        # the same packages; PySpark's default is the first `python3` on PATH. On a cluster whose
        # executors keep Python elsewhere, PYSPARK_PYTHON set by the user wins.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder
        for key, value in spark_conf(settings, java_options).items():
            builder = builder.config(key, value)
        class_archive.publish_at_exit(archive, stop_spark)  # also releases the claim if this fails
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel(settings.spark_log_level)
        log.info(
            "spark session started: master=%s, jit=%s",
            settings.spark_master,
            "quick" if QUICK_JIT in java_options else "full",
        )
        return _session


def stop_spark() -> None:
    """Stop the process's session (tests and shutdown hooks)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
