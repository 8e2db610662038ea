"""The job table: idempotent train jobs, atomic claims, restart recovery."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from salesflow.errors import NotFoundError
from salesflow.services.jobs.db import JobDB

UPLOAD = "a" * 32
SHA = "b" * 64


@pytest.fixture
def db(tmp_path: Path) -> JobDB:
    return JobDB(tmp_path / "jobs.db")


def test_same_upload_gives_the_same_job(db: JobDB) -> None:
    first, created = db.create_train(UPLOAD, "file:///x/uploads/a.csv", SHA)
    again, created_again = db.create_train(UPLOAD, "file:///x/uploads/a.csv", SHA)
    assert created and not created_again
    assert again.job_id == first.job_id
    assert first.status == "queued" and first.kind == "train" and first.sha256 == SHA
    assert len(first.job_id) == 32 and int(first.job_id, 16) >= 0  # 128 random bits, hex


def test_twenty_threads_create_one_job(db: JobDB) -> None:
    barrier = threading.Barrier(20)

    def create(_: int) -> tuple[str, bool]:
        barrier.wait()
        job, created = db.create_train(UPLOAD, "file:///u.csv", None)
        return job.job_id, created

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(db.find()) == 1


def test_claims_in_order_and_never_twice(db: JobDB) -> None:
    ids = [db.create_train(f"{n:032x}", f"file:///{n}.csv", None)[0].job_id for n in range(5)]
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (job := db.claim_next()) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    assert all(job.status == "running" and job.attempts == 1 for job in db.find())
    assert db.claim_next() is None


def test_claim_takes_the_oldest_first(db: JobDB) -> None:
    first = db.create_train("1" * 32, "file:///1.csv", None)[0]
    db.create_train("2" * 32, "file:///2.csv", None)
    claimed = db.claim_next()
    assert claimed is not None and claimed.job_id == first.job_id and claimed.started_at


def test_succeed_and_fail_record_the_outcome(db: JobDB) -> None:
    one = db.create_train("1" * 32, "file:///1.csv", None)[0]
    two = db.create_train("2" * 32, "file:///2.csv", None)[0]
    done = db.succeed(
        one.job_id, model_version="v0001", result={"rows_read": 7}, log_tail=["a", "b"]
    )
    assert done.status == "succeeded" and done.model_version == "v0001" and done.finished_at
    assert done.to_dict()["rows_read"] == 7 and done.log_tail == ["a", "b"]
    failed = db.fail(two.job_id, code="bad_header", message="missing column(s): date", log_tail=[])
    assert (failed.status, failed.error_code, failed.error) == (
        "failed",
        "bad_header",
        "missing column(s): date",
    )


def test_recover_requeues_a_first_attempt_and_fails_a_second(tmp_path: Path) -> None:
    db = JobDB(tmp_path / "jobs.db")
    once = db.create_train("1" * 32, "file:///1.csv", None)[0]
    twice = db.create_train("2" * 32, "file:///2.csv", None)[0]
    predict = db.create_predict("file:///p.csv", None, tmp_path / "out.csv", "c" * 32)
    for _ in range(3):
        db.claim_next()
    # `twice` ran once before and was re-queued: its second claim is attempt 2.
    db.release(twice.job_id)
    assert db.claim_next() is not None
    db.close()

    reopened = JobDB(tmp_path / "jobs.db")  # a restart
    recovered = {job.job_id: job for job in reopened.recover()}
    assert recovered[once.job_id].status == "queued"
    assert recovered[twice.job_id].status == "failed"
    assert recovered[twice.job_id].error_code == "interrupted"
    assert recovered[predict.job_id].status == "failed"  # predict jobs are not re-run
    assert not reopened.find(status="running")
    assert reopened.recover() == []


def test_find_filters_and_orders_newest_first(db: JobDB) -> None:
    old = db.create_train("1" * 32, "file:///1.csv", None)[0]
    new = db.create_train("2" * 32, "file:///2.csv", None)[0]
    assert [j.job_id for j in db.find()] == [new.job_id, old.job_id]
    assert [j.job_id for j in db.find(upload_id="1" * 32)] == [old.job_id]
    assert db.find(status="succeeded") == []
    assert len(db.find(limit=1)) == 1


def test_unknown_job_is_not_found(db: JobDB) -> None:
    with pytest.raises(NotFoundError, match="no job"):
        db.get("f" * 32)


def test_a_train_jobs_dict_carries_granularity_filled_cells_coherence_and_the_day_run(
    db: JobDB,
) -> None:
    job, _ = db.create_train(UPLOAD, "file:///u.csv", SHA)
    assert db.claim_next() is not None
    day_run = {"version": "v0002", "granularity": "day", "filled_cells": 40, "promoted": True}
    result = {
        "rows_read": 10,
        "granularity": "month",
        "filled_cells": None,
        "coherence": None,
        "also": [{**day_run, "coherence": {"total_ratio": 0.97}}],
    }
    done = db.succeed(job.job_id, model_version="v0001", result=result, log_tail=[]).to_dict()
    assert (done["granularity"], done["filled_cells"], done["coherence"]) == ("month", None, None)
    assert done["also"] == [{**day_run, "coherence": {"total_ratio": 0.97}}]
    assert db.get(job.job_id).to_dict()["also"][0]["version"] == "v0002"  # read back from SQLite


def test_rows_from_before_day_models_read_as_month_jobs_without_a_day_run(db: JobDB) -> None:
    job, _ = db.create_train(UPLOAD, "file:///u.csv", SHA)
    assert job.to_dict()["granularity"] is None and job.to_dict()["also"] == []  # queued: unknown
    assert db.claim_next() is not None
    old = db.succeed(job.job_id, model_version="v0001", result={"rows_read": 10}, log_tail=[])
    body = old.to_dict()
    assert (body["granularity"], body["filled_cells"], body["coherence"], body["also"]) == (
        "month",
        None,
        None,
        [],
    )
