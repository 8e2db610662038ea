"""Replays: a past upload trained again as a new job, the table that allows it, and the runner and
reporter treating a replay as its own job."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.contract import upload_key
from salesflow.services.jobs.app import StatusReporter, create_app
from salesflow.services.jobs.db import JobDB
from salesflow.services.jobs.engine import PredictOutcome
from salesflow.services.jobs.runner import JobRunner
from salesflow.spark.train import TrainInput, TrainResult
from salesflow.storage import store_for

UPLOAD = "c" * 32
SHA = "d" * 64
#: The job table as it was before replays: upload_id UNIQUE, no job_key.
OLD_SCHEMA = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, upload_id TEXT UNIQUE, status TEXT NOT NULL,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, input_url TEXT NOT NULL,
    sha256 TEXT, model_version TEXT, result TEXT, output_path TEXT, error_code TEXT, error TEXT,
    log_tail TEXT NOT NULL DEFAULT '[]', attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status);
"""


def test_replays_are_new_numbered_jobs_and_the_first_job_stays(tmp_path: Path) -> None:
    db = JobDB(tmp_path / "jobs.db")
    first, created = db.create_train(UPLOAD, "file:///u.csv", SHA)
    one, created_one = db.create_train(UPLOAD, "file:///u.csv", SHA, replay=True)
    two, created_two = db.create_train(UPLOAD, "file:///u.csv", None, replay=True)
    again, created_again = db.create_train(UPLOAD, "file:///u.csv", SHA)
    assert (created, created_one, created_two, created_again) == (True, True, True, False)
    assert [first.job_key, one.job_key, two.job_key] == [
        UPLOAD,
        f"{UPLOAD}:replay:1",
        f"{UPLOAD}:replay:2",
    ]
    assert again.job_id == first.job_id and not first.replay and one.replay and two.replay
    assert db.first_train(UPLOAD) == first and db.first_train("e" * 32) is None
    assert one.to_dict()["replay"] is True and one.to_dict()["upload_id"] == UPLOAD
    assert len(db.find(upload_id=UPLOAD)) == 3


def test_concurrent_replays_get_distinct_numbers(tmp_path: Path) -> None:
    db = JobDB(tmp_path / "jobs.db")
    barrier = threading.Barrier(10)

    def replay(_: int) -> str:
        barrier.wait()
        return db.create_train(UPLOAD, "file:///u.csv", None, replay=True)[0].job_key

    with ThreadPoolExecutor(10) as pool:
        keys = sorted(pool.map(replay, range(10)), key=lambda k: int(k.rsplit(":", 1)[1]))
    assert keys == [f"{UPLOAD}:replay:{n}" for n in range(1, 11)]


def test_a_table_from_before_replays_is_rebuilt_keeping_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO jobs (job_id, kind, upload_id, status, created_at, input_url, sha256)"
            " VALUES ('j1', 'train', ?, 'succeeded', '2024-01-01T00:00:00.000Z', 'file:///u', ?)",
            (UPLOAD, SHA),
        )
        conn.execute(
            "INSERT INTO jobs (job_id, kind, status, created_at, input_url)"
            " VALUES ('j2', 'predict', 'queued', '2024-01-01T00:00:01.000Z', 'file:///p')"
        )
    db = JobDB(path)
    old = db.get("j1")
    assert (old.job_key, old.status, old.sha256) == (UPLOAD, "succeeded", SHA)
    assert db.get("j2").job_key == "j2"
    job, created = db.create_train(UPLOAD, "file:///u", SHA, replay=True)
    assert created and job.job_key == f"{UPLOAD}:replay:1"
    db.close()
    assert JobDB(path).get("j1").job_key == UPLOAD  # a second open leaves the new table alone


def test_a_rerun_replay_does_not_adopt_the_first_jobs_version(settings: Settings) -> None:
    """An interrupted replay runs again: an older version of the same upload is not its own."""
    registry = ModelRegistry(settings.data_dir / "models")
    db = JobDB(settings.data_dir / "jobs.db")
    first, _ = db.create_train(UPLOAD, "file:///u.csv", SHA)
    db.claim_next()
    with registry.staging() as staged:  # the first job's model, published the same second
        registry.publish(
            staged, {"inputs": [{"upload_id": UPLOAD}]}, activate=True, reason="t", actor="t"
        )
    db.succeed(first.job_id, model_version="v0001", result={}, log_tail=[])
    trained: list[Sequence[TrainInput]] = []

    def train(spark: Any, settings: Settings, inputs: Sequence[TrainInput], **_: Any) -> Any:
        trained.append(inputs)
        return TrainResult("v0002", {}, 1, 0, {}, None, 1, None, [], 0.1)

    def no_predict(
        source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
    ) -> PredictOutcome:
        raise AssertionError("not used")

    runner = JobRunner(settings, db, registry, train_fn=train, predict_fn=no_predict)
    job, _ = db.create_train(UPLOAD, "file:///u.csv", SHA, replay=True)
    db.claim_next()
    db.release(job.job_id)  # interrupted once: re-queued
    claimed = db.claim_next()
    assert claimed is not None and claimed.attempts == 2
    done = runner.run(claimed)
    assert done.status == "succeeded" and done.model_version == "v0002"
    assert [i.upload_id for i in trained[0]] == [UPLOAD] and trained[0][0].sha256 == SHA


def test_replays_do_not_report_to_the_upload_service(tmp_path: Path) -> None:
    db = JobDB(tmp_path / "jobs.db")
    sent: list[str] = []
    reporter = StatusReporter(lambda upload_id, status, fields: sent.append(status))
    reporter.start()
    first, _ = db.create_train(UPLOAD, "file:///u.csv", None)
    replay, _ = db.create_train(UPLOAD, "file:///u.csv", None, replay=True)
    running = [j for j in (db.claim_next(), db.claim_next()) if j is not None]
    for job in running:
        reporter.on_status(job)
    reporter.stop()
    assert [j.job_id for j in running] == [first.job_id, replay.job_id]
    assert sent == ["training"]


def test_post_train_replay_needs_the_stored_file(settings: Settings) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("not used")

    from salesflow.services.jobs.engine import SparkEngine

    engine = SparkEngine(session=object, stop=lambda: None, train=refuse, predict=refuse)
    app = create_app(settings, engine=engine, report=lambda *_: None)
    with TestClient(app, headers=auth_headers(settings)) as client:
        missing = client.post("/train", json={"upload_id": UPLOAD, "replay": True})
        assert missing.status_code == 404
        store_for(settings).put(upload_key(UPLOAD), [b"stored bytes"])
        first = client.post("/train", json={"upload_id": UPLOAD, "sha256": SHA}).json()
        replay = client.post("/train", json={"upload_id": UPLOAD, "replay": True}).json()
    assert first["created"] and replay["created"] and replay["job_id"] != first["job_id"]
    assert replay["job_key"] == f"{UPLOAD}:replay:1" and replay["sha256"] == SHA
