"""The job runner and the status reporter, driven directly with plain functions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from salesflow.config import Settings
from salesflow.errors import NotFoundError, UnavailableError
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.app import StatusReporter
from salesflow.services.jobs.db import Job, JobDB
from salesflow.services.jobs.engine import PredictOutcome
from salesflow.services.jobs.runner import JobRunner
from salesflow.spark.train import TrainInput

UPLOAD = "0123456789abcdef0123456789abcdef"


def no_predict(
    source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
) -> PredictOutcome:
    raise AssertionError("not used")


def make_runner(
    settings: Settings, train_fn: Callable[..., Any], on_status: Callable[[Job], None] | None = None
) -> tuple[JobRunner, JobDB]:
    db = JobDB(settings.data_dir / "jobs.db")
    registry = ModelRegistry(settings.data_dir / "models")
    runner = JobRunner(
        settings,
        db,
        registry,
        on_status,
        train_fn=train_fn,
        predict_fn=no_predict,
        session_fn=object,
    )
    return runner, db


def wait_status(db: JobDB, job_id: str, status: str, timeout: float = 5.0) -> Job:
    deadline = time.monotonic() + timeout
    while (job := db.get(job_id)).status != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {job.status}, expected {status}")
        time.sleep(0.02)
    return job


def test_log_tail_keeps_only_this_jobs_lines(settings: Settings) -> None:
    stranger = logging.getLogger("salesflow.elsewhere")

    def train(spark: Any, settings: Settings, inputs: Sequence[TrainInput], **kwargs: Any) -> Any:
        logging.getLogger("salesflow.spark.train").warning("read 20000 rows")
        other = threading.Thread(target=stranger.warning, args=("another thread's line",))
        other.start()
        other.join()
        kwargs["progress"]("fitting the final model")
        raise NotFoundError("no object 'uploads/x.csv'")

    runner, db = make_runner(settings, train)
    db.create_train(UPLOAD, "file:///x.csv", None)
    claimed = db.claim_next()
    assert claimed is not None
    done = runner.run(claimed)
    tail = "\n".join(done.log_tail)
    assert "read 20000 rows" in tail and "fitting the final model" in tail
    assert "another thread's line" not in tail
    assert tail.count("fitting the final model") == 1  # a progress line is not logged twice
    assert (done.status, done.error_code) == ("failed", "not_found")
    assert done.log_tail[-1].endswith("failed: not_found: no object 'uploads/x.csv'")


def test_log_tail_is_bounded(settings: Settings) -> None:
    def train(spark: Any, settings: Settings, inputs: Any, **kwargs: Any) -> Any:
        for n in range(500):
            kwargs["progress"](f"stage {n} " + "x" * 1000)
        raise UnavailableError("gone")

    runner, db = make_runner(settings, train)
    db.create_train(UPLOAD, "file:///x.csv", None)
    claimed = db.claim_next()
    assert claimed is not None
    tail = runner.run(claimed).log_tail
    assert len(tail) == 50 and all(len(line) <= 500 for line in tail)
    assert "stage 499" in tail[-2]


def test_statuses_are_reported_in_order(settings: Settings) -> None:
    seen: list[tuple[str, str | None]] = []

    def train(spark: Any, settings: Settings, inputs: Any, **kwargs: Any) -> Any:
        class Result:
            version = "v0007"
            metrics = {"model": {"wape": 0.1}}

        return Result()

    runner, db = make_runner(
        settings, train, lambda job: seen.append((job.status, job.model_version))
    )
    runner.start()
    try:
        job, _ = db.create_train(UPLOAD, "file:///x.csv", None)
        runner.kick()
        done = wait_status(db, job.job_id, "succeeded")
    finally:
        runner.stop()
    assert seen == [("running", None), ("succeeded", "v0007")]
    assert done.result["metrics"] == {"model": {"wape": 0.1}} and done.result["rows_read"] is None


def test_a_job_cut_short_by_shutdown_is_requeued(settings: Settings) -> None:
    entered, release = threading.Event(), threading.Event()

    def train(spark: Any, settings: Settings, inputs: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        raise RuntimeError("SparkContext was shut down")

    runner, db = make_runner(settings, train)
    runner.start()
    job, _ = db.create_train(UPLOAD, "file:///x.csv", None)
    runner.kick()
    assert entered.wait(5)
    runner.stop(timeout=0.1)
    assert db.get(job.job_id).status == "running"
    release.set()
    requeued = wait_status(db, job.job_id, "queued")
    assert requeued.error_code is None and requeued.attempts == 1


def test_reporter_retries_an_unavailable_upload_service() -> None:
    calls: list[str] = []

    def send(upload_id: str, status: str, fields: dict[str, Any]) -> None:
        calls.append(status)
        if len(calls) < 3:
            raise UnavailableError("connection refused")

    reporter = StatusReporter(send, attempts=4, backoff_s=0.01)
    reporter.start()
    job = Job(UPLOAD, "train", UPLOAD, "running", "2024-01-01T00:00:00Z", "file:///x.csv")
    reporter.on_status(job)
    reporter.stop()
    assert calls == ["training"] * 3


@pytest.mark.parametrize("error", [NotFoundError("no upload"), ValueError("bad")])
def test_reporter_does_not_retry_a_refusal(error: Exception) -> None:
    calls: list[str] = []

    def send(upload_id: str, status: str, fields: dict[str, Any]) -> None:
        calls.append(status)
        raise error

    reporter = StatusReporter(send, attempts=4, backoff_s=0.01)
    reporter.start()
    reporter.on_status(
        Job("j" * 32, "train", UPLOAD, "failed", "t", "file:///x", error_code="e", error="m")
    )
    reporter.on_status(Job("k" * 32, "predict", None, "succeeded", "t", "file:///y"))
    reporter.stop()
    assert calls == ["failed"]


def test_reporter_never_blocks_the_runner() -> None:
    gate = threading.Event()

    def send(upload_id: str, status: str, fields: dict[str, Any]) -> None:
        gate.wait(10)

    reporter = StatusReporter(send, attempts=1)
    reporter.start()
    started = time.monotonic()
    for status in ("running", "succeeded"):
        reporter.on_status(Job("j" * 32, "train", UPLOAD, status, "t", "file:///x"))
    assert time.monotonic() - started < 0.5
    gate.set()
    reporter.stop()
