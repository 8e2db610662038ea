"""A class-data-sharing archive for Spark's driver JVM: a new JVM maps the classes it needs
instead of loading and verifying them one by one.

A new Spark JVM spends seconds loading classes (its start, then Catalyst, codegen, MLlib on the
first jobs). The JDK can record the classes a JVM loaded into an archive when it exits
(`-XX:ArchiveClassesAtExit`) and map that archive into later JVMs (`-XX:SharedArchiveFile`).
Measured on 2 cores: a cold 20k-row `salesflow train` 24-28 s -> 19.5-22 s, session start ~6 s ->
~4 s and the first read+clean+aggregate ~8 s -> ~6 s.

The first process that starts Spark while no archive exists records one: at its exit it stops
Spark, closes the JVM's stdin (the JVM then exits and writes the archive) and waits for it. A
truncated archive crashes the JVM that maps it, so the archive is only ever published by renaming
a finished recording into place, after the recording JVM exited with status 0. One process records
at a time (a claim file made with O_EXCL); a claim older than CLAIM_STALE_S is taken over. An
archive recorded for another classpath is refused by the JVM (quietly: its CDS messages are
switched off, see QUIET), and Spark starts without it. Off with `SALESFLOW_SPARK_CLASS_ARCHIVE=false`.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyspark

from salesflow.config import Settings, get_settings
from salesflow.errors import SalesflowError
from salesflow.sales.generate import generate_sales
from salesflow.spark.java import check_java

__all__ = ["ArchivePlan", "archive_path", "main", "plan", "prune", "publish_at_exit", "record"]

log = logging.getLogger(__name__)

#: A claim (a recording in progress) older than this is abandoned and may be taken over.
CLAIM_STALE_S = 15 * 60
#: How long an exiting process waits for its JVM to write the archive (measured ~15 s).
RECORD_TIMEOUT_S = 120.0
#: An archive fits one Spark installation's path (a venv, a clone): besides the newest, the folder
#: keeps this many archives, the most recently used (mapping one touches it); ~200 MB each.
KEEP_OTHERS = 3
#: The JVM's CDS messages go to its stdout (a recording prints hundreds of "skipping" lines, a
#: refused archive a warning), which is the CLI's: kept off it.
QUIET = "-Xlog:cds*=off"


@dataclass(frozen=True)
class ArchivePlan:
    """The JVM option for this process's Spark start, and the recording it makes, if any."""

    java_option: str  # "" (no archive), -XX:SharedArchiveFile=... or -XX:ArchiveClassesAtExit=...
    archive: Path | None = None  # where a finished recording is published
    recording: Path | None = None  # set when this process records the archive at its exit


def _folder(settings: Settings) -> Path:
    if settings.spark_class_archive_dir is not None:
        return settings.spark_class_archive_dir
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "salesflow"


def archive_path(settings: Settings) -> Path:
    """One archive per JVM and Spark installation (an archive only fits the classpath it saw)."""
    java = Path(os.path.realpath(shutil.which("java") or "java"))
    # A JDK updated in place, or its base archive regenerated, makes a new key: the JVM would
    # refuse the old archive, and a refused archive is never recorded again.
    stamps = [
        str(path.stat().st_mtime_ns) if path.exists() else "-"
        for path in (java, java.parent.parent / "lib" / "server" / "classes.jsa")
    ]
    spark_jars = Path(pyspark.__file__).parent / "jars"
    # The JVM refuses an archive when a classpath jar's size or mtime changed (a venv
    # reinstalled at the same path): such jars make a new key, so a new archive is recorded.
    jars = sorted(
        f"{jar.name}:{jar.stat().st_size}:{jar.stat().st_mtime_ns}"
        for jar in spark_jars.glob("*.jar")
    )
    extra = settings.spark_conf.get("spark.driver.extraClassPath", "")
    key = "|".join([str(java), *stamps, str(spark_jars), *jars, pyspark.__version__, extra])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return _folder(settings) / f"spark-driver-{pyspark.__version__}-{digest}.jsa"


def plan(settings: Settings) -> ArchivePlan:
    """Map the archive if there is one; else record it, unless another process already does."""
    if not settings.spark_class_archive:
        return ArchivePlan("")
    archive = archive_path(settings)
    if archive.is_file():
        with contextlib.suppress(OSError):
            os.utime(archive)  # its last use, for pruning
        return ArchivePlan(f"-XX:SharedArchiveFile={archive} {QUIET}", archive)
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not _claim(archive):
            return ArchivePlan("")
    except OSError as exc:  # a read-only home, say: Spark starts as it would without the archive
        log.info("no class archive (%s)", exc)
        return ArchivePlan("")
    recording = archive.with_name(f"{archive.name}.{os.getpid()}.recording")
    return ArchivePlan(f"-XX:ArchiveClassesAtExit={recording} {QUIET}", archive, recording)


def _claim_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".claim")


def _claim(archive: Path) -> bool:
    """True if this process may record the archive (no other live claim)."""
    claim = _claim_path(archive)
    with contextlib.suppress(FileNotFoundError):
        if time.time() - claim.stat().st_mtime > CLAIM_STALE_S:
            claim.unlink()  # its recorder died; its partial recording, if any, is removed below
            for stale in archive.parent.glob(archive.name + ".*.recording"):
                stale.unlink(missing_ok=True)
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def publish_at_exit(archive_plan: ArchivePlan, stop_spark: Callable[[], None]) -> None:
    """When this process exits: stop Spark, let the JVM write its recording, publish it."""
    if archive_plan.recording is not None:
        atexit.register(_publish, archive_plan, stop_spark)


def _publish(archive_plan: ArchivePlan, stop_spark: Callable[[], None]) -> None:
    from pyspark import SparkContext

    recording, archive = archive_plan.recording, archive_plan.archive
    assert recording is not None and archive is not None
    try:
        stop_spark()
        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None)
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(Exception):
            gateway.shutdown()  # type: ignore[union-attr]
        proc.stdin.close()  # the JVM exits on EOF, writing the recording first
        started = time.monotonic()
        code = proc.wait(timeout=RECORD_TIMEOUT_S)
        if code == 0 and recording.is_file() and recording.stat().st_size > 0:
            os.replace(recording, archive)
            log.info("class archive written in %.1f s: %s", time.monotonic() - started, archive)
            prune(archive)
    except Exception as exc:  # never fail an exiting process over an optimisation
        log.info("class archive not written: %s", exc)
    finally:
        recording.unlink(missing_ok=True)
        _claim_path(archive).unlink(missing_ok=True)


def prune(archive: Path) -> None:
    """Delete the folder's other archives beyond the KEEP_OTHERS most recently used (a JVM that
    maps one keeps its pages: a file is only unlinked)."""
    others = [p for p in archive.parent.glob("spark-driver-*.jsa") if p != archive]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_OTHERS:]:
        old.unlink(missing_ok=True)


#: Rows of the file `record` trains on: enough for every stage of a training to run.
RECORD_ROWS = 2_000


def record(settings: Settings) -> Path | None:
    """Record the archive now, unless it exists: a small training in a new process (scratch
    folder), which records it at its exit as the first `salesflow train` would, MLlib's classes
    included. The archive's path, or None when it is switched off or was not written."""
    if not settings.spark_class_archive:
        return None
    archive = archive_path(settings)
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(prefix="salesflow-class-archive-") as tmp:
        scratch = Path(tmp)
        sales = scratch / "sales.csv"
        generate_sales(sales, rows=RECORD_ROWS, seed=0)
        data = scratch / "data"
        child = settings.model_copy(
            update={"data_dir": data, "warehouse_url": (data / "warehouse").as_uri()}
        )
        done = subprocess.run(
            [sys.executable, "-m", "salesflow.spark.train", sales.as_uri()],
            env={**os.environ, **child.to_env(), "SPARK_LOCAL_IP": "127.0.0.1"},
            cwd=scratch,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=CLAIM_STALE_S,
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the recording training failed ({done.returncode}): {last[:300]}")
    return archive if archive.is_file() else None


def main() -> int:
    """`python -m salesflow.spark.class_archive`: record Spark's class archive unless it exists
    (`make install` runs it, so a new clone's first Spark start maps one too)."""
    settings = get_settings()
    try:
        check_java()
        started = time.monotonic()
        found = record(settings)
    except (SalesflowError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"no class archive recorded: {str(exc).splitlines()[0][:300]}")
        return 1
    if found is None:
        print("no class archive: switched off, or another process is recording it")
    else:
        print(f"class archive: {found} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
