"""UploadDB on a real SQLite file: the transactional outbox, dedupe, status transitions, reconcile."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from salesflow.errors import InputError, NotFoundError, ReportMismatchError
from salesflow.services.upload.db import UploadDB, utc_now
from salesflow.services.upload.record import NewUpload

TOPIC = "sales.uploads.test"


def record(n: int, sha: str | None = None) -> NewUpload:
    upload_id = f"{n:032x}"
    return NewUpload(
        upload_id=upload_id,
        key=f"uploads/{upload_id}.csv",
        url=f"file:///objects/uploads/{upload_id}.csv",
        size=100 + n,
        sha256=sha or f"{n:064x}",
        filename=f"f{n}.csv",
        created_at=utc_now(),
        preview={"lines": n},
    )


@pytest.fixture
def db(tmp_path: Path) -> UploadDB:
    return UploadDB(tmp_path / "uploads.db")


def test_upload_and_event_are_written_together(db: UploadDB, tmp_path: Path) -> None:
    stored, duplicate = db.add_upload(record(1), b'{"e":1}', TOPIC)

    assert duplicate is False
    assert stored.status == "stored"
    assert stored.preview == {"lines": 1}
    [event] = db.events_of(stored.upload_id)
    assert (event["topic"], event["key"], event["payload"]) == (
        TOPIC,
        stored.upload_id,
        b'{"e":1}',
    )
    assert event["published_at"] is None
    mode = sqlite3.connect(tmp_path / "uploads.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_failed_insert_leaves_neither_row_nor_event(db: UploadDB) -> None:
    db.add_upload(record(1), b"e", TOPIC)
    with pytest.raises(sqlite3.IntegrityError):  # same upload_id again, forced past the dedupe
        db.add_upload(record(1), b"e2", TOPIC, force=True)
    assert db.pending_count() == 1
    assert len(db.recent()) == 1


def test_duplicate_by_sha256_unless_forced_or_rejected(db: UploadDB) -> None:
    first, _ = db.add_upload(record(1, sha="a" * 64), b"e", TOPIC)

    again, duplicate = db.add_upload(record(2, sha="a" * 64), b"e", TOPIC)
    assert duplicate is True
    assert again.upload_id == first.upload_id
    assert db.pending_count() == 1  # nothing written for the duplicate

    forced, duplicate = db.add_upload(record(3, sha="a" * 64), b"e", TOPIC, force=True)
    assert duplicate is False and forced.upload_id == record(3).upload_id

    for upload in (first, forced):
        db.update_status(
            upload.upload_id,
            "rejected",
            error_code="bad_header",
            sha256=upload.sha256,
            size=upload.size,
        )
    fresh, duplicate = db.add_upload(record(4, sha="a" * 64), b"e", TOPIC)
    assert duplicate is False and fresh.upload_id == record(4).upload_id


def test_a_report_about_another_file_changes_nothing(db: UploadDB) -> None:
    """A forged or corrupt event naming a real upload cannot reject it: the claim must match."""
    upload, _ = db.add_upload(record(5), b"e", TOPIC)
    uid, sha, size = upload.upload_id, upload.sha256, upload.size

    with pytest.raises(ReportMismatchError, match="does not match"):
        db.update_status(
            uid, "rejected", error_code="checksum_mismatch", sha256="f" * 64, size=size
        )
    with pytest.raises(ReportMismatchError):
        db.update_status(uid, "rejected", error_code="size_mismatch", sha256=sha, size=size + 1)
    with pytest.raises(InputError, match="sha256 and size"):
        db.update_status(uid, "rejected", error_code="object_missing")
    assert db.get(uid).status == "stored"

    _, applied = db.update_status(
        uid, "rejected", error_code="object_missing", sha256=sha, size=size
    )
    assert applied and db.get(uid).status == "rejected"


def test_concurrent_identical_uploads_create_one(db: UploadDB) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def add(n: int) -> None:
        barrier.wait()
        results.append(db.add_upload(record(n, sha="b" * 64), b"e", TOPIC)[1])

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] + [True] * 7


def test_status_moves_forward_only(db: UploadDB) -> None:
    upload_id = db.add_upload(record(1), b"e", TOPIC)[0].upload_id

    queued, applied = db.update_status(upload_id, "queued", job_id="j1")
    assert applied and queued.status == "queued" and queued.job_id == "j1"
    training, applied = db.update_status(upload_id, "training")
    assert applied and training.job_id == "j1"  # None keeps the stored value
    stale, applied = db.update_status(upload_id, "queued", job_id="j-old")
    assert not applied and stale.status == "training" and stale.job_id == "j1"
    trained, applied = db.update_status(
        upload_id, "trained", model_version="v3", metrics={"wape": 0.12}
    )
    assert applied and trained.model_version == "v3" and trained.metrics == {"wape": 0.12}
    after, applied = db.update_status(upload_id, "failed", error_code="x", error="late")
    assert not applied
    assert (after.status, after.error_code) == ("trained", None)


def test_status_errors(db: UploadDB) -> None:
    with pytest.raises(NotFoundError):
        db.update_status("f" * 32, "queued")
    upload_id = db.add_upload(record(1), b"e", TOPIC)[0].upload_id
    with pytest.raises(ValueError, match="not a reportable status"):
        db.update_status(upload_id, "stored")
    long_error = "x" * 10_000
    failed, _ = db.update_status(upload_id, "failed", error_code="model_error", error=long_error)
    assert len(failed.error) == 2000


def test_recent_newest_first_and_by_status(db: UploadDB) -> None:
    for n in range(1, 4):
        db.add_upload(record(n), b"e", TOPIC)
    db.update_status(record(2).upload_id, "queued")
    assert [u.upload_id for u in db.recent()] == [record(n).upload_id for n in (3, 2, 1)]
    assert [u.upload_id for u in db.recent(status="queued")] == [record(2).upload_id]
    assert len(db.recent(limit=2)) == 2


def test_outbox_publish_bookkeeping(db: UploadDB) -> None:
    for n in range(1, 4):
        db.add_upload(record(n), f"e{n}".encode(), TOPIC)
    first, second, third = db.pending_events()
    assert [first.payload, second.payload, third.payload] == [b"e1", b"e2", b"e3"]

    db.mark_failed(first.id, "unavailable: down")
    db.mark_published(first.id)
    db.mark_published(second.id)

    assert [row.id for row in db.pending_events()] == [third.id]
    [event] = db.events_of(first.upload_id)
    assert event["attempts"] == 2 and event["last_error"] is None
    assert event["published_at"] is not None


def test_stale_uploads_and_republish(db: UploadDB) -> None:
    for n in range(1, 5):
        db.add_upload(record(n), b"e", TOPIC)
    pending_one = record(1).upload_id  # its first event is still unpublished
    for row in db.pending_events():
        if row.upload_id != pending_one:
            db.mark_published(row.id)
    db.update_status(record(3).upload_id, "training")
    db.update_status(record(4).upload_id, "trained")
    time.sleep(0.05)

    stale = {u.upload_id for u in db.stale_uploads(0.01)}
    assert stale == {record(2).upload_id, record(3).upload_id}
    assert db.stale_uploads(3600) == []

    db.republish(record(2).upload_id, TOPIC, b"again")
    assert db.events_of(record(2).upload_id)[-1]["payload"] == b"again"
    # Its new event waits, and its reconcile clock restarted: not stale twice.
    assert {u.upload_id for u in db.stale_uploads(0.01)} == {record(3).upload_id}
