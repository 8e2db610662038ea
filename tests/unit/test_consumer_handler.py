"""The upload consumer's handler and dead-letter record, on a real FileStore with plain stub clients."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from salesflow.clients.jobs import JobServerClient
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import (
    BusyError,
    InputError,
    NotFoundError,
    StorageError,
    UnavailableError,
)
from salesflow.faults import EXIT_CODE
from salesflow.sales.contract import UploadEvent, new_upload_id, upload_key
from salesflow.services.consumer.deadletter import (
    MAX_EVENT_BYTES,
    dead_letter,
    encode_dead_letter,
    scrub,
)
from salesflow.services.consumer.handler import (
    DeadLetter,
    Done,
    Retry,
    UploadHandler,
    upload_id_of,
)
from salesflow.storage import FileStore, ObjectInfo, store_for

HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"
BODY = HEADER + b"1,Widget,2.50,10,North,3,2024-01-05\n2,Gadget,4.00,10,North,1,2024-01-06\n"


class StubJobs:
    """The job server client's `train`, recording calls; raises `error` if given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str | None]] = []
        self.modes: list[str | None] = []

    def train(self, upload_id: str, sha256: str | None, mode: str | None = None) -> dict[str, Any]:
        self.calls.append((upload_id, sha256))
        self.modes.append(mode)
        if self.error is not None:
            raise self.error
        return {"job_id": f"job-{len(self.calls)}", "upload_id": upload_id, "created": True}


class StubUploads:
    """The upload client's `report_status`, recording calls; the first `failures` calls raise."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or UnavailableError("upload service down")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def report_status(self, upload_id: str, status: str, **fields: Any) -> dict[str, Any]:
        self.calls.append((upload_id, status, fields))
        if len(self.calls) <= self.failures:
            raise self.error
        return {"upload_id": upload_id, "status": status}


@pytest.fixture
def store(settings: Settings) -> FileStore:
    store = store_for(settings)
    assert isinstance(store, FileStore)
    return store


def make_handler(
    settings: Settings, store: Any, jobs: StubJobs | None = None, uploads: StubUploads | None = None
) -> tuple[UploadHandler, StubJobs, StubUploads]:
    jobs = jobs or StubJobs()
    uploads = uploads or StubUploads()
    handler = UploadHandler(settings, store, jobs, uploads, report_delays=(0.0, 0.0))
    return handler, jobs, uploads


def stored_event(store: FileStore, body: bytes = BODY) -> tuple[UploadEvent, ObjectInfo]:
    """Store `body` as a new upload the way the upload service does; return its event."""
    upload_id = new_upload_id()
    info = store.put(upload_key(upload_id), [body])
    assert info.sha256 is not None
    event = UploadEvent(
        upload_id=upload_id,
        url=info.url,
        size=info.size,
        sha256=info.sha256,
        filename="sales.csv",
        uploaded_at="2024-03-01T12:00:00Z",
    )
    return event, info


def handled(handler: UploadHandler, value: bytes | None) -> Any:
    outcome = handler.handle(value)
    assert handler.flush(5.0), "status reports were not sent in time"
    return outcome


# --- the happy path ----------------------------------------------------------------------------


def test_good_event_trains_once_and_reports_queued(settings: Settings, store: FileStore) -> None:
    handler, jobs, uploads = make_handler(settings, store)
    event, info = stored_event(store)

    outcome = handled(handler, event.to_json())

    assert outcome == Done(event.upload_id, "job-1")
    assert jobs.calls == [(event.upload_id, info.sha256)]
    assert uploads.calls == [(event.upload_id, "queued", {"job_id": "job-1"})]
    handler.close()


def test_the_history_mode_of_the_event_reaches_the_job_server(
    settings: Settings, store: FileStore
) -> None:
    handler, jobs, _ = make_handler(settings, store)
    event, _ = stored_event(store)
    assert "mode" not in event.to_dict()  # the setting applies: the event as before modes
    with_mode = dataclasses.replace(event, mode="reject")
    assert UploadEvent.from_json(with_mode.to_json()) == with_mode
    assert isinstance(handled(handler, with_mode.to_json()), Done)
    assert jobs.modes == ["reject"]
    wrong = handled(handler, json.dumps({**event.to_dict(), "mode": "merge"}).encode())
    assert isinstance(wrong, DeadLetter) and "'mode'" in wrong.detail
    handler.close()


# --- the event itself ---------------------------------------------------------------------------


def _event_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "upload_id": "0123456789abcdef0123456789abcdef",
        "url": "file:///nowhere/uploads/0123456789abcdef0123456789abcdef.csv",
        "size": 10,
        "sha256": "a" * 64,
        "filename": "x.csv",
        "uploaded_at": "2024-03-01T12:00:00Z",
        "schema_version": 1,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("value", "named_id", "says"),
    [
        (None, False, "no value"),
        (b"not json {", False, "not JSON"),
        (b"\xff\xfe\x00", False, "not JSON"),
        (b"[1, 2]", False, "not a JSON object"),
        (json.dumps(_event_dict(schema_version=_DROP)).encode(), True, "schema_version"),
        (json.dumps(_event_dict(schema_version=2)).encode(), True, "schema_version 2"),
        (json.dumps(_event_dict(sha256=_DROP)).encode(), True, "'sha256'"),
        (json.dumps(_event_dict(size="10")).encode(), True, "'size'"),
        (json.dumps(_event_dict(upload_id="../../etc/passwd")).encode(), False, "'upload_id'"),
        (json.dumps(_event_dict(upload_id="0123456789ABCDEF" * 2)).encode(), False, "upload_id"),
    ],
    ids=[
        "none",
        "not-json",
        "binary",
        "not-object",
        "no-version",
        "wrong-version",
        "missing-field",
        "wrong-type",
        "path-id",
        "upper-hex-id",
    ],
)
def test_malformed_event_is_dead_lettered(
    settings: Settings, store: FileStore, value: bytes | None, named_id: bool, says: str
) -> None:
    handler, jobs, uploads = make_handler(settings, store)

    outcome = handled(handler, value)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "malformed_event"
    assert says in outcome.detail
    assert jobs.calls == []
    # A well-formed id is named in the dead letter, but a bad event may be forged: the upload it
    # names is not reported rejected (its genuine event can still train it).
    expected_id = "0123456789abcdef0123456789abcdef" if named_id else None
    assert outcome.upload_id == expected_id
    assert uploads.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "s3://someone-elses-bucket/uploads/{id}.csv",
        "http://169.254.169.254/latest/meta-data/",
        "file:///tmp/elsewhere/uploads/{id}.csv",
    ],
)
def test_url_pointing_elsewhere_is_invalid_key(
    settings: Settings, store: FileStore, url: str
) -> None:
    handler, jobs, uploads = make_handler(settings, store)
    event, _ = stored_event(store)  # the object exists and is valid: only the URL is wrong
    value = json.dumps({**event.to_dict(), "url": url.format(id=event.upload_id)}).encode()

    outcome = handled(handler, value)

    assert isinstance(outcome, DeadLetter)
    assert (outcome.reason, outcome.upload_id) == ("invalid_key", event.upload_id)
    assert "://" not in outcome.detail  # never echo the URL
    assert jobs.calls == []
    assert uploads.calls == []  # the event is at fault, not the upload it names


# --- the object ---------------------------------------------------------------------------------


def test_missing_object(settings: Settings, store: FileStore) -> None:
    handler, jobs, _ = make_handler(settings, store)
    event, _ = stored_event(store)
    store.delete(upload_key(event.upload_id))

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "object_missing"
    assert str(store.root) not in outcome.detail
    assert jobs.calls == []


def test_tampered_object_is_checksum_mismatch(settings: Settings, store: FileStore) -> None:
    handler, jobs, _ = make_handler(settings, store)
    event, _ = stored_event(store)
    tampered = BODY.replace(b"Widget", b"Wodget")  # same size, different bytes
    assert len(tampered) == len(BODY)
    store.put(upload_key(event.upload_id), [tampered])

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "checksum_mismatch"
    assert event.sha256 in outcome.detail
    assert jobs.calls == []


def test_grown_object_is_size_mismatch(settings: Settings, store: FileStore) -> None:
    handler, jobs, _ = make_handler(settings, store)
    event, _ = stored_event(store)
    store.put(upload_key(event.upload_id), [BODY + b"3,Extra,1.00,10,North,1,2024-01-07\n"])

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "size_mismatch"
    assert f"the event says {len(BODY)}" in outcome.detail
    assert jobs.calls == []


def test_bad_header(settings: Settings, store: FileStore) -> None:
    handler, jobs, uploads = make_handler(settings, store)
    event, _ = stored_event(store, b"product_id,name,price\n1,a,2\n")

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "bad_header"
    assert "missing column(s): product_name" in outcome.detail
    assert jobs.calls == []
    assert uploads.calls[0][2]["error_code"] == "bad_header"


class BrokenStore(FileStore):
    """A file store whose reads fail the way an unreachable S3 endpoint does."""

    def checksum(self, key: str) -> ObjectInfo:
        raise StorageError("could not reach http://10.0.0.1:9000 for bucket secret-bucket")


def test_store_failure_is_transient_and_does_not_leak(settings: Settings, store: FileStore) -> None:
    event, _ = stored_event(store)
    handler, jobs, uploads = make_handler(settings, BrokenStore(store.root))

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, Retry)
    assert outcome.reason == "storage_unavailable"
    assert "secret-bucket" not in outcome.detail and "10.0.0.1" not in outcome.detail
    assert jobs.calls == [] and uploads.calls == []


# --- the job server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [UnavailableError("connection refused"), BusyError("too many jobs")]
)
def test_job_server_unavailable_is_retry(
    settings: Settings, store: FileStore, error: Exception
) -> None:
    handler, jobs, uploads = make_handler(settings, store, jobs=StubJobs(error))
    event, info = stored_event(store)

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, Retry)
    assert outcome.reason == "job_server_unavailable"
    assert jobs.calls == [(event.upload_id, info.sha256)]
    assert uploads.calls == []  # nothing is decided yet


def test_job_server_refusal_is_dead_letter_with_its_code(
    settings: Settings, store: FileStore
) -> None:
    refusal = InputError("url does not match the upload's location")
    refusal.code = "invalid_key"  # the client carries the server's error code
    handler, _, uploads = make_handler(settings, store, jobs=StubJobs(refusal))
    event, _ = stored_event(store)

    outcome = handled(handler, event.to_json())

    assert outcome == DeadLetter(
        "invalid_key",
        "url does not match the upload's location",
        event.upload_id,
        (event.sha256, event.size),
    )
    assert uploads.calls[0][1] == "rejected"


def test_job_server_not_found_is_dead_letter(settings: Settings, store: FileStore) -> None:
    handler, _, _ = make_handler(settings, store, jobs=StubJobs(NotFoundError("no such object")))
    event, _ = stored_event(store)

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "not_found"


# --- through the real clients over httpx.MockTransport ------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (202, {"job_id": "j-42", "status": "queued", "created": True}, Done),
        (400, {"error": {"code": "invalid_key", "message": "url mismatch"}}, DeadLetter),
        (503, {"error": {"code": "unavailable", "message": "starting"}}, Retry),
        (401, {"error": {"code": "unauthorized", "message": "wrong token"}}, Retry),
    ],
    ids=["accepted", "refused", "unavailable", "unauthorized"],
)
def test_handler_with_real_clients(
    settings: Settings, store: FileStore, status: int, body: dict[str, Any], expected: type
) -> None:
    event, info = stored_event(store)
    train_requests: list[httpx.Request] = []
    status_requests: list[httpx.Request] = []

    def job_server(request: httpx.Request) -> httpx.Response:
        train_requests.append(request)
        return httpx.Response(status, json={**body, "upload_id": event.upload_id})

    def upload_service(request: httpx.Request) -> httpx.Response:
        status_requests.append(request)
        return httpx.Response(200, json={"upload_id": event.upload_id})

    jobs = JobServerClient(settings, transport=httpx.MockTransport(job_server))
    uploads = UploadClient(settings, transport=httpx.MockTransport(upload_service))
    handler = UploadHandler(settings, store, jobs, uploads, report_delays=())

    outcome = handled(handler, event.to_json())

    assert isinstance(outcome, expected)
    assert [(r.method, r.url.path) for r in train_requests] == [("POST", "/train")]
    assert json.loads(train_requests[0].content) == {
        "upload_id": event.upload_id,
        "sha256": info.sha256,
    }
    assert train_requests[0].headers["authorization"].startswith("Bearer ")
    reported = [json.loads(r.content) for r in status_requests]
    if expected is Done:
        assert reported == [{"status": "queued", "job_id": "j-42"}]
    elif expected is DeadLetter:
        assert outcome.reason == "invalid_key"
        assert reported == [
            {
                "status": "rejected",
                "error_code": "invalid_key",
                "error": outcome.detail,
                "sha256": event.sha256,
                "size": event.size,
            }
        ]
    else:
        assert reported == []
    assert all(r.url.path == f"/uploads/{event.upload_id}/status" for r in status_requests)
    handler.close()
    jobs.close()
    uploads.close()


# --- status reports -----------------------------------------------------------------------------


def test_failing_status_report_is_retried_and_does_not_change_outcome(
    settings: Settings, store: FileStore
) -> None:
    uploads = StubUploads(failures=100)
    handler, jobs, _ = make_handler(settings, store, uploads=uploads)
    event, _ = stored_event(store)

    outcome = handled(handler, event.to_json())

    assert outcome == Done(event.upload_id, "job-1")
    assert len(uploads.calls) == 3  # the first try and the two configured retries
    assert len(jobs.calls) == 1


def test_status_report_succeeds_on_retry(settings: Settings, store: FileStore) -> None:
    uploads = StubUploads(failures=1)
    handler, _, _ = make_handler(settings, store, uploads=uploads)
    event, _ = stored_event(store)

    handled(handler, event.to_json())

    assert [c[1] for c in uploads.calls] == ["queued", "queued"]


def test_refused_status_report_is_not_retried(settings: Settings, store: FileStore) -> None:
    uploads = StubUploads(failures=100, error=NotFoundError("unknown upload"))
    handler, _, _ = make_handler(settings, store, uploads=uploads)
    event, _ = stored_event(store)

    assert isinstance(handled(handler, event.to_json()), Done)
    assert len(uploads.calls) == 1


def test_give_up_dead_letters_and_reports(settings: Settings, store: FileStore) -> None:
    handler, _, uploads = make_handler(settings, store)
    event, _ = stored_event(store)

    outcome = handler.give_up(
        event.to_json(), Retry("job_server_unavailable", "the job server is unavailable")
    )
    assert handler.flush(5.0)

    assert outcome.reason == "job_server_unavailable"
    assert outcome.upload_id == event.upload_id
    assert "gave up after 15 min" in outcome.detail
    assert uploads.calls == [
        (
            event.upload_id,
            "rejected",
            {
                "error_code": "job_server_unavailable",
                "error": outcome.detail,
                "sha256": event.sha256,
                "size": event.size,
            },
        )
    ]


def test_upload_id_of() -> None:
    good = "0123456789abcdef0123456789abcdef"
    assert upload_id_of(json.dumps({"upload_id": good}).encode()) == good
    assert upload_id_of(json.dumps({"upload_id": "nope"}).encode()) is None
    assert upload_id_of(b"[]") is None
    assert upload_id_of(b"\xff") is None
    assert upload_id_of(None) is None


def test_crash_point_exits_before_the_train_call(settings: Settings, store: FileStore) -> None:
    event, _ = stored_event(store)
    script = f"""
import sys
from salesflow.config import Settings
from salesflow.services.consumer.handler import UploadHandler
from salesflow.storage import store_for

class Jobs:
    def train(self, upload_id, sha256, mode=None):
        print("TRAIN CALLED", flush=True)
        return {{"job_id": "j"}}

class Uploads:
    def report_status(self, upload_id, status, **fields):
        return {{}}

settings = Settings(data_dir={str(settings.data_dir)!r}, crash_point="consumer.after_verify",
                    _env_file=None)
handler = UploadHandler(settings, store_for(settings), Jobs(), Uploads())
handler.handle(sys.stdin.buffer.read())
print("SURVIVED", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=event.to_json(),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == EXIT_CODE, done.stderr.decode()
    assert b"TRAIN CALLED" not in done.stdout and b"SURVIVED" not in done.stdout


# --- the dead-letter record ---------------------------------------------------------------------


def test_dead_letter_record_shape() -> None:
    event = b'{"upload_id": "x", "caf\xc3\xa9": 1, "bad": "\xff"}'
    when = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)

    record = json.loads(
        encode_dead_letter("malformed_event", "field 'upload_id'", None, event, failed_at=when)
    )

    assert record == {
        "schema_version": 1,
        "reason": "malformed_event",
        "detail": "field 'upload_id'",
        "upload_id": None,
        "event": '{"upload_id": "x", "café": 1, "bad": "\ufffd"}',
        "failed_at": "2024-03-01T12:00:00.123Z",
    }


def test_dead_letter_event_is_capped_and_time_is_utc() -> None:
    record = dead_letter("malformed_event", "too big", None, b"x" * (MAX_EVENT_BYTES + 10))

    assert len(record["event"]) == MAX_EVENT_BYTES
    assert record["failed_at"].endswith("Z")
    assert abs(datetime.fromisoformat(record["failed_at"]) - datetime.now(UTC)).total_seconds() < 60
    assert dead_letter("r", "d", None, None)["event"] == ""


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (
            "no object 'uploads/a.csv' in file:///srv/data/objects",
            "no object 'uploads/a.csv' in <url>",
        ),
        ("bucket s3://secret-bucket/prefix is gone", "bucket <url> is gone"),
        (
            "cannot open /var/lib/salesflow/objects/uploads/a.csv: denied",
            "cannot open <path>: denied",
        ),
        ("missing column(s): date; 10/20 rows", "missing column(s): date; 10/20 rows"),
    ],
)
def test_scrub_removes_locations(detail: str, expected: str) -> None:
    assert scrub(detail) == expected


def test_scrub_caps_length() -> None:
    assert len(scrub("x" * 10_000)) == 2000
