"""The process's one SparkSession, tuned for salesflow's input sizes and configurable for a cluster."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.errors import ConfigurationError
from salesflow.spark import class_archive

__all__ = ["check_java", "get_spark", "spark_conf", "stop_spark"]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_session: SparkSession | None = None

JAVA_HINT = (
    "Java 17 or newer is required to run Spark and was not found on PATH. "
    "Install it with: apt-get install openjdk-17-jre-headless"
)


def check_java() -> None:
    """Fail early, with the fix, when no usable java is on PATH."""
    java = shutil.which("java")
    if java is None:
        raise ConfigurationError(JAVA_HINT)
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    # `java -version` prints e.g. 'openjdk version "17.0.15"' or 'version "1.8.0_392"'.
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        return
    if major < 17:
        raise ConfigurationError(f"Java {major} found; {JAVA_HINT}")


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


def get_spark(settings: Settings) -> SparkSession:
    """The process's SparkSession, created on first use (one JVM per process)."""
    global _session
    with _lock:
        if _session is not None:
            return _session
        check_java()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        archive = class_archive.plan(settings)
        builder = SparkSession.builder
        for key, value in spark_conf(settings, archive.java_option).items():
            builder = builder.config(key, value)
        class_archive.publish_at_exit(archive, stop_spark)  # also releases the claim if this fails
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel(settings.spark_log_level)
        log.info("spark session started: master=%s", settings.spark_master)
        return _session


def stop_spark() -> None:
    """Stop the process's session (tests and shutdown hooks)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
