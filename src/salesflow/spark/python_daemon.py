"""Spark's Python worker daemon, with the statistical models' imports done once, before it forks.

PySpark starts one daemon per executor (in local mode: beside the driver) and forks a worker from
it for each Python task. Every worker of `salesflow.spark.statistical` imports statsforecast on its
first task (with numba and scipy, ~2 s of CPU on an idle core); this daemon imports it before it
forks, so the workers start with it loaded and pay nothing. `session.spark_conf` names this module
as `spark.python.daemon.module`; `start_python_workers` starts the daemon early, while the JVM
reads the files.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading

from pyspark.sql import SparkSession

__all__ = ["PRELOADED", "preload", "start_python_workers"]

log = logging.getLogger(__name__)

#: Modules the daemon imports before forking workers.
PRELOADED = ("pandas", "pyarrow", "statsforecast.models")


def preload() -> None:
    """Import PRELOADED; a module that fails is left for a worker to import (and report).

    The daemon's stdout carries its port to the JVM, so anything an import prints goes to
    stderr instead."""
    with contextlib.redirect_stdout(sys.stderr):
        for name in PRELOADED:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the worker's own import raises it where it matters
                print(f"salesflow python daemon: {name} not preloaded: {exc}", file=sys.stderr)


def start_python_workers(spark: SparkSession) -> threading.Thread:
    """Start the Python daemon now, in a background thread (a one-task job): a training whose
    statistical candidates will need Python workers overlaps the daemon's imports with reading
    the files. Failures are logged, never raised: the real job starts the daemon anyway."""

    def touch() -> None:
        try:
            spark.sparkContext.parallelize([0], 1).map(lambda x: x).count()
        except Exception as exc:
            log.debug("python workers not started early: %s", exc)

    thread = threading.Thread(target=touch, name="salesflow-python-workers", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    from pyspark import daemon  # PySpark's own daemon: the driver never needs it imported

    preload()
    daemon.manager()
