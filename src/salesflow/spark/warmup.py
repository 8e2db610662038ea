"""JIT warm-up: a long-lived Spark driver trains a small generated file a few times at start.

A new JVM runs Spark's code interpreted, then compiled by C1, then by C2 once hot; on 2 cores the
C2 compiler works for minutes after start on the cores the jobs need (13 s of CPU during a first
20k-row training, still ~4 s in a fifth). The job server (one JVM kept for every job) pays that
once, in the background, by training a generated file in a scratch folder: its registry,
history and files are thrown away, nothing touches the real warehouse. A real job stops the
warm-up at once (`WarmUp.stop` cancels its Spark jobs); the warm-up never fails the server. With a
cluster master it is skipped: the executors could not read the driver's scratch folder.

Spark logs a cancelled write as an ERROR with a stack trace (SPARK_JOB_CANCELLED); for the
warm-up that is the expected way to end, so those loggers are silenced while it runs and the
warm-up's own INFO line says it stopped.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.generate import generate_sales
from salesflow.spark.train import TrainInput, train

__all__ = ["WARMUP_GROUP", "WARMUP_ROWS", "WarmUp"]

log = logging.getLogger(__name__)

#: Spark job group of the warm-up's jobs (cancelled together when a real job arrives).
WARMUP_GROUP = "salesflow-jit-warmup"
#: Rows of the generated file: the same code paths as a real file (a 2k- and a 20k-row training
#: take the same time warm: fixed costs), without the generator's time for a large one.
WARMUP_ROWS = 5_000
#: How long `stop` waits for the warm-up to leave Spark before the real job starts anyway.
STOP_TIMEOUT_S = 5.0
#: Spark's loggers that print a cancelled job as an ERROR with a stack trace: the driver's
#: "Aborting job" and the task's "Aborting task".
CANCEL_LOGGERS = (
    "org.apache.spark.sql.execution.datasources.FileFormatWriter",
    "org.apache.spark.util.Utils",
)


@dataclass
class WarmUp:
    """Train a generated file `runs` times, unless stopped; `done` lists the runs' seconds."""

    settings: Settings
    runs: int
    done: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _left: threading.Event = field(default_factory=threading.Event)  # run() has returned
    _spark: SparkSession | None = None

    def run(self, spark: SparkSession) -> None:
        """The warm-up on `spark`, in the caller's thread (a dedicated one: it takes the job
        group, so `stop` from another thread cancels its Spark jobs)."""
        try:
            if not self.settings.spark_master.startswith("local"):
                # Executors elsewhere could not read the driver's scratch folder.
                log.info("JIT warm-up skipped: Spark's master is a cluster")
            elif self.runs > 0 and not self._stop.is_set():
                self._run(spark)
        finally:
            self._left.set()

    def _run(self, spark: SparkSession) -> None:
        self._spark = spark
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="jit-warmup-", dir=self.settings.data_dir))
        context = spark.sparkContext
        context.setJobGroup(WARMUP_GROUP, "JIT warm-up", interruptOnCancel=True)
        started = time.perf_counter()
        try:
            with quiet_cancellations(spark):
                self._runs(spark, scratch)
        finally:
            for key in ("spark.jobGroup.id", "spark.job.description"):
                context.setLocalProperty(key, None)  # type: ignore[arg-type]
            shutil.rmtree(scratch, ignore_errors=True)
        reason = "stopped (a job came, or the server stops)" if self._stop.is_set() else "done"
        log.info(
            "JIT warm-up %s: %d run(s) in %.1f s",
            reason,
            len(self.done),
            time.perf_counter() - started,
        )

    def _runs(self, spark: SparkSession, scratch: Path) -> None:
        try:
            sales = scratch / "sales.csv"
            generate_sales(sales, rows=WARMUP_ROWS, seed=0)
            for n in range(1, self.runs + 1):
                if self._stop.is_set():
                    break
                self._train_once(spark, scratch / f"run-{n}", sales)
                log.info("JIT warm-up: run %d of %d in %.1f s", n, self.runs, self.done[-1])
        except Exception as exc:  # never fatal: the server works, only its first jobs are slower
            if not self._stop.is_set():
                log.warning("JIT warm-up stopped by an error: %s", str(exc).splitlines()[0][:300])

    def _train_once(self, spark: SparkSession, folder: Path, sales: Path) -> None:
        settings = self.settings.model_copy(
            update={
                "data_dir": folder,
                "warehouse_url": (folder / "warehouse").as_uri(),
                "crash_point": None,
            }
        )
        started = time.perf_counter()
        train(
            spark,
            settings,
            [TrainInput(sales.as_uri())],
            registry=ModelRegistry(settings.warehouse_path / "models"),
            progress=self._check,
            actor="salesflow.jit-warmup",
        )
        self.done.append(round(time.perf_counter() - started, 3))
        shutil.rmtree(folder, ignore_errors=True)

    def _check(self, _stage: str) -> None:
        """train()'s progress callback: leave at the next stage once stopped."""
        if self._stop.is_set():
            raise _Stopped

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop now and wait (up to `timeout`) until the warm-up has left Spark: a real job wants
        the cores. Its running Spark jobs are cancelled, again and again, since a cancel reaches
        only the jobs running at that moment and the warm-up may start one just after."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._spark is not None and not self._left.is_set():
            self._spark.sparkContext.cancelJobGroup(WARMUP_GROUP)
            if self._left.wait(0.1) or time.monotonic() > deadline:
                break


@contextmanager
def quiet_cancellations(spark: SparkSession) -> Iterator[None]:
    """CANCEL_LOGGERS off in the block, their levels put back after (nothing changes when the
    JVM's log4j cannot be reached)."""
    try:
        jvm: Any = spark.sparkContext._jvm
        log4j = jvm.org.apache.logging.log4j
        setter = log4j.core.config.Configurator
        before = {name: log4j.LogManager.getLogger(name).getLevel() for name in CANCEL_LOGGERS}
        for name in CANCEL_LOGGERS:
            setter.setLevel(name, log4j.Level.OFF)
    except Exception:  # not a local JVM (Spark Connect) or another logging backend
        log.debug("Spark's cancellation loggers left as they are", exc_info=True)
        before = {}
    try:
        yield
    finally:
        for name, level in before.items():
            setter.setLevel(name, level)


class _Stopped(Exception):
    """Raised through train() by the progress callback when the warm-up is stopped."""
