"""The job server's HTTP API with plain-function training and prediction (no Spark)."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.sales.contract import upload_key
from salesflow.services.jobs.app import create_app
from salesflow.services.jobs.db import JobDB
from salesflow.services.jobs.engine import PredictOutcome, SparkEngine
from salesflow.spark.train import TrainInput, TrainResult
from salesflow.storage import store_for

UPLOAD = "0123456789abcdef0123456789abcdef"
SHA = "e" * 64
HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
SMALL_CSV = (
    HEADER + "p1,Radiator,2000,s1,Giant,3,2021-01-05\n"
    "p1,Radiator,2000,s1,Giant,4,2021-01-20\n"
    "p2,Legion 5,3500,s2,MG,1,2021-02-01\n"
)


class FakeSpark:
    """Training and prediction as plain functions that publish real registry versions."""

    def __init__(self) -> None:
        self.trained: list[TrainInput] = []
        self.shapes: list[bool] = []  # per_month of each prediction asked
        self.fail_with: Exception | None = None
        self.release = threading.Event()
        self.release.set()

    def train(
        self,
        spark: Any,
        settings: Settings,
        inputs: Sequence[TrainInput],
        *,
        registry: ModelRegistry | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> TrainResult:
        assert registry is not None and progress is not None
        self.trained.extend(inputs)
        progress("reading, validating and aggregating")
        self.release.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        metrics = {"model": {"wape": 0.2}, "baseline": {"wape": 0.4}}
        with registry.staging() as staged:
            (staged / "pipeline").mkdir()
            published = registry.publish(
                staged, {"metrics": metrics, "rows_read": 3}, activate=True, reason="t", actor="t"
            )
        return TrainResult(
            version=published.version,
            metrics=metrics,
            rows_read=3,
            rows_rejected=0,
            rejects_by_reason={},
            rejects_url=None,
            rows_aggregated=2,
            date_range={"first": "2021-01-05", "last": "2021-02-01"},
            inputs=[],
            duration_s=0.01,
        )

    def predict(
        self, source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
    ) -> PredictOutcome:
        self.release.wait(10)
        self.shapes.append(per_month)
        rows = list(csv.DictReader(io.StringIO(source.read_text())))
        keys = sorted({(r["store_id"], r["product_id"], r["date"][:7]) for r in rows})
        records = [
            {"store_id": s, "product_id": p, "period": m, "predicted_quantity": 1.0}
            for s, p, m in keys
        ]
        if csv_out is not None:
            csv_out.parent.mkdir(parents=True, exist_ok=True)
            with csv_out.open("w", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
        return PredictOutcome(
            model_version=version or "v0001",
            rows=len(records),
            unknown_stores=["s9"] if any(s == "s9" for s, _, _ in keys) else [],
            records=None if csv_out is not None else records,
        )

    def engine(self, session: Callable[[], Any] = object) -> SparkEngine:
        return SparkEngine(
            session=session, stop=lambda: None, train=self.train, predict=self.predict
        )


class Reports:
    """Statuses the job server sent to the upload service."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, upload_id: str, status: str, fields: dict[str, Any]) -> None:
        self.sent.append((upload_id, status, fields))


@pytest.fixture
def fake() -> FakeSpark:
    return FakeSpark()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def client(settings: Settings, fake: FakeSpark, reports: Reports) -> Iterator[TestClient]:
    app = create_app(settings, engine=fake.engine(), report=reports)
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def wait_for(client: TestClient, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# --- training --------------------------------------------------------------------------------


def test_train_is_accepted_and_runs(
    client: TestClient, settings: Settings, fake: FakeSpark, reports: Reports
) -> None:
    answer = client.post("/train", json={"upload_id": UPLOAD, "sha256": SHA})
    assert answer.status_code == 202
    body = answer.json()
    assert body["created"] is True and body["upload_id"] == UPLOAD and body["kind"] == "train"
    job = wait_for(client, body["job_id"])
    assert job["status"] == "succeeded" and job["model_version"] == "v0001"
    assert job["rows_read"] == 3 and job["metrics"]["model"]["wape"] == 0.2
    assert any("reading, validating" in line for line in job["log_tail"])
    # The job reads the location derived from the configured store, never one from the caller.
    expected = store_for(settings).url_for(upload_key(UPLOAD))
    assert fake.trained == [TrainInput(url=expected, sha256=SHA, upload_id=UPLOAD)]
    assert job["input_url"] == expected
    wait_until(lambda: len(reports.sent) == 2)
    assert [(u, s) for u, s, _ in reports.sent] == [(UPLOAD, "training"), (UPLOAD, "trained")]
    assert reports.sent[1][2]["model_version"] == "v0001"
    assert reports.sent[1][2]["metrics"]["baseline"]["wape"] == 0.4


def test_train_carries_the_history_mode(
    client: TestClient, settings: Settings, fake: FakeSpark
) -> None:
    answer = client.post("/train", json={"upload_id": UPLOAD, "mode": "reject"})
    assert answer.status_code == 202 and answer.json()["mode"] == "reject"
    wait_for(client, answer.json()["job_id"])
    assert [i.mode for i in fake.trained] == ["reject"]
    bad = client.post("/train", json={"upload_id": "1" * 32, "mode": "merge"})
    assert bad.status_code == 422


def test_same_upload_again_is_the_same_job(client: TestClient) -> None:
    first = client.post("/train", json={"upload_id": UPLOAD}).json()
    again = client.post("/train", json={"upload_id": UPLOAD, "sha256": SHA})
    assert again.status_code == 202
    assert again.json()["job_id"] == first["job_id"] and again.json()["created"] is False


def test_twenty_concurrent_requests_make_one_job(client: TestClient, fake: FakeSpark) -> None:
    def post(_: int) -> dict[str, Any]:
        answer = client.post("/train", json={"upload_id": UPLOAD, "sha256": SHA})
        assert answer.status_code == 202
        result: dict[str, Any] = answer.json()
        return result

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    assert len({a["job_id"] for a in answers}) == 1
    assert sum(a["created"] for a in answers) == 1
    wait_for(client, answers[0]["job_id"])
    assert len(client.get("/jobs").json()["jobs"]) == 1
    assert len(fake.trained) == 1


def test_a_url_outside_the_store_is_refused(client: TestClient, settings: Settings) -> None:
    for url in ("file:///etc/passwd", "s3://other-bucket/uploads/x.csv", "/tmp/x.csv"):
        answer = client.post("/train", json={"upload_id": UPLOAD, "url": url})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_key"
    assert client.get("/jobs").json()["jobs"] == []
    own = store_for(settings).url_for(upload_key(UPLOAD))
    assert client.post("/train", json={"upload_id": UPLOAD, "url": own}).status_code == 202


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"upload_id": "../../etc/passwd"}, "invalid_key"),
        ({"upload_id": UPLOAD.upper()}, "invalid_key"),
        ({"upload_id": UPLOAD, "sha256": "xyz"}, "invalid_input"),
    ],
)
def test_bad_train_requests_are_400(client: TestClient, body: dict[str, Any], code: str) -> None:
    answer = client.post("/train", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code


def test_a_domain_failure_is_recorded_with_its_code(
    client: TestClient, fake: FakeSpark, reports: Reports
) -> None:
    message = "412 of 20000 rows rejected (2.1%) > limit 1%: bad_date 400"
    fake.fail_with = TooManyRejectsError(message)
    job_id = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
    job = wait_for(client, job_id)
    assert (job["status"], job["error_code"], job["error"]) == (
        "failed",
        "too_many_rejects",
        message,
    )
    assert job["model_version"] is None
    wait_until(lambda: len(reports.sent) == 2)
    assert reports.sent[1][1:] == (
        "failed",
        {"job_id": job_id, "error_code": "too_many_rejects", "error": message},
    )


def test_too_many_rejects_keeps_the_counts_and_serves_the_rejects_file(
    client: TestClient, fake: FakeSpark, settings: Settings
) -> None:
    rejects = settings.warehouse_path / "rejects" / SHA / "rejects.csv"
    rejects.parent.mkdir(parents=True)
    rejects.write_text("date,reject_reason\n12/03/2021,bad_date\n")
    counts = {
        "rows_read": 3000,
        "rows_rejected": 525,
        "rejects_by_reason": {"bad_date": 525},
        "rejects_url": rejects.as_uri(),
    }
    fake.fail_with = TooManyRejectsError("525 of 3000 rows rejected", counts=counts)
    job_id = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
    job = wait_for(client, job_id)
    assert job["status"] == "failed"
    assert (job["rows_read"], job["rows_rejected"]) == (3000, 525)
    assert job["rejects_by_reason"] == {"bad_date": 525}
    answer = client.get(f"/jobs/{job_id}/rejects")
    assert answer.status_code == 200 and answer.text.endswith("12/03/2021,bad_date\n")
    assert "attachment" in answer.headers["content-disposition"]


def test_a_job_without_rejects_or_with_one_outside_the_warehouse_has_no_rejects_file(
    client: TestClient, fake: FakeSpark, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("secret\n")
    fake.fail_with = TooManyRejectsError("x", counts={"rejects_url": outside.as_uri()})
    job_id = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
    wait_for(client, job_id)
    answer = client.get(f"/jobs/{job_id}/rejects")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_an_unexpected_failure_shows_no_traceback_and_keeps_the_active_model(
    client: TestClient, fake: FakeSpark
) -> None:
    first = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
    assert wait_for(client, first)["model_version"] == "v0001"
    fake.fail_with = RuntimeError("Traceback (most recent call last):\n at /secret/path/Job.java")
    second = client.post("/train", json={"upload_id": "1" * 32}).json()["job_id"]
    job = wait_for(client, second)
    assert job["status"] == "failed" and job["error_code"] == "training_error"
    shown = job["error"] + "".join(job["log_tail"])
    assert "RuntimeError" in job["error"]
    assert "Traceback" not in shown and "/secret/path" not in shown
    models = client.get("/models").json()
    assert models["active"] == "v0001" and [m["version"] for m in models["models"]] == ["v0001"]


def test_a_job_left_running_is_rerun_after_a_restart(
    settings: Settings, fake: FakeSpark, reports: Reports
) -> None:
    db = JobDB(settings.data_dir / "jobs.db")
    job, _ = db.create_train(UPLOAD, "file:///somewhere/uploads/x.csv", None)
    assert db.claim_next() is not None  # a previous process died while running it
    db.close()
    app = create_app(settings, engine=fake.engine(), report=reports)
    with TestClient(app, headers=auth_headers(settings)) as client:
        done = wait_for(client, job.job_id)
    assert done["status"] == "succeeded" and done["attempts"] == 2


def test_list_jobs_filters(client: TestClient) -> None:
    job_id = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
    wait_for(client, job_id)
    assert [j["job_id"] for j in client.get(f"/jobs?upload_id={UPLOAD}").json()["jobs"]] == [job_id]
    assert client.get("/jobs?status=failed").json()["jobs"] == []
    assert client.get("/jobs?status=bogus").status_code == 422
    assert client.get(f"/jobs/{'f' * 32}").status_code == 404


# --- predictions -----------------------------------------------------------------------------


def test_predict_answers_csv_by_default(client: TestClient, fake: FakeSpark) -> None:
    answer = client.post("/predict", files={"file": ("x.csv", SMALL_CSV, "text/csv")})
    assert answer.status_code == 200 and fake.shapes == [False]
    assert client.post("/predict?per_month=1", files={"file": ("x.csv", SMALL_CSV)}).is_success
    assert fake.shapes == [False, True]
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["store_id"], r["product_id"], r["period"]) for r in rows] == [
        ("s1", "p1", "2021-01"),
        ("s2", "p2", "2021-02"),
    ]


def test_predict_answers_json_when_asked(client: TestClient, settings: Settings) -> None:
    answer = client.post(
        "/predict?model=v0003",
        files={"file": ("x.csv", SMALL_CSV.replace("s2,MG", "s9,New"), "text/csv")},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 404  # no such model yet: refused before any work
    answer = client.post(
        "/predict",
        files={"file": ("x.csv", SMALL_CSV.replace("s2,MG", "s9,New"), "text/csv")},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["row_count"] == 2 and body["unknown_stores"] == ["s9"]
    assert {r["store_id"] for r in body["rows"]} == {"s1", "s9"}
    # Inputs and outputs of synchronous predictions are not left behind.
    leftovers = list((settings.data_dir / "predict-inputs").glob("*"))
    leftovers += list((settings.data_dir / "predict-outputs").glob("*"))
    assert leftovers == []


def test_predict_without_quantity_and_bad_header(client: TestClient) -> None:
    no_quantity = SMALL_CSV.replace(",quantity", "").replace(",3,", ",").replace(",4,", ",")
    no_quantity = no_quantity.replace(",1,", ",")
    assert client.post("/predict", files={"file": ("x.csv", no_quantity)}).status_code == 200
    answer = client.post("/predict", files={"file": ("x.csv", "store_id,product_id\ns1,p1\n")})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_header" and "date" in error["message"]


def test_a_large_file_becomes_a_predict_job(
    settings: Settings, fake: FakeSpark, reports: Reports
) -> None:
    small = settings.model_copy(update={"predict_sync_max_bytes": 64})
    fake.release.clear()
    with TestClient(create_app(small, engine=fake.engine(), report=reports)) as client:
        client.headers.update(auth_headers(small))
        answer = client.post("/predict", files={"file": ("big.csv", SMALL_CSV)})
        assert answer.status_code == 202
        job = answer.json()
        assert job["kind"] == "predict" and job["upload_id"] is None
        assert client.get(f"/jobs/{job['job_id']}/output").status_code == 404
        fake.release.set()
        done = wait_for(client, job["job_id"])
        assert done["status"] == "succeeded" and done["rows"] == 2
        monthly = client.post("/predict?per_month=true", files={"file": ("big.csv", SMALL_CSV)})
        assert wait_for(client, monthly.json()["job_id"])["status"] == "succeeded"
        assert fake.shapes == [False, True]  # per input row unless per_month: the job keeps it
        output = client.get(done["output"])
        assert output.status_code == 200 and output.text.startswith("store_id,product_id,period")
    assert list((small.data_dir / "predict-inputs").glob("*")) == []
    assert reports.sent == []  # predict jobs do not touch upload statuses


def test_a_file_above_the_upload_limit_is_413(
    settings: Settings, fake: FakeSpark, reports: Reports
) -> None:
    tiny = settings.model_copy(update={"max_upload_bytes": 100})
    with TestClient(create_app(tiny, engine=fake.engine(), report=reports)) as client:
        client.headers.update(auth_headers(tiny))
        answer = client.post("/predict", files={"file": ("big.csv", SMALL_CSV)})
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"
        assert client.get("/jobs").json()["jobs"] == []
    assert list((tiny.data_dir / "predict-inputs").glob("*")) == []


def test_too_many_synchronous_predictions_are_busy(
    settings: Settings, fake: FakeSpark, reports: Reports
) -> None:
    one = settings.model_copy(update={"predict_max_concurrent": 1})
    fake.release.clear()
    with TestClient(create_app(one, engine=fake.engine(), report=reports)) as client:
        client.headers.update(auth_headers(one))
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/predict", files={"file": ("a.csv", SMALL_CSV)})
            wait_until(lambda: list((one.data_dir / "predict-inputs").glob("*")) != [])
            time.sleep(0.1)  # let the first request take its slot
            second = client.post("/predict", files={"file": ("b.csv", SMALL_CSV)})
            fake.release.set()
            assert first.result().status_code == 200
    assert second.status_code == 503 and second.json()["error"]["code"] == "busy"
    assert second.headers["retry-after"] == "1"


def test_predict_waits_for_spark(settings: Settings, fake: FakeSpark, reports: Reports) -> None:
    started = threading.Event()
    app = create_app(settings, engine=fake.engine(session=lambda: started.wait(10)), report=reports)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["spark"] == "starting"
        answer = client.post(
            "/predict", files={"file": ("a.csv", SMALL_CSV)}, headers=auth_headers(settings)
        )
        assert answer.status_code == 503 and "spark: starting" in answer.json()["error"]["message"]
        started.set()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/readyz").json()["checks"] == {
            "spark": "ok",
            "db": "ok",
            "storage": "ok",
        }


# --- models and auth -------------------------------------------------------------------------


def test_models_list_and_activate(client: TestClient) -> None:
    for upload in ("1" * 32, "2" * 32):
        wait_for(client, client.post("/train", json={"upload_id": upload}).json()["job_id"])
    models = client.get("/models").json()
    assert models["active"] == "v0002"
    assert [(m["version"], m["active"]) for m in models["models"]] == [
        ("v0002", True),
        ("v0001", False),
    ]
    assert models["models"][0]["metrics"]["model"]["wape"] == 0.2
    assert "path" not in models["models"][0]
    answer = client.post("/models/v0001/activate", json={"reason": "rollback"})
    assert answer.status_code == 200 and answer.json()["active"] is True
    assert client.get("/models").json()["active"] == "v0001"
    assert client.post("/models/v0009/activate").status_code == 404
    assert client.post("/models/..%2F..%2Fetc/activate").status_code == 404


def test_everything_but_health_needs_the_token(settings: Settings, fake: FakeSpark) -> None:
    with TestClient(create_app(settings, engine=fake.engine(), report=Reports())) as client:
        for method, path in [
            ("POST", "/train"),
            ("GET", "/jobs"),
            ("GET", f"/jobs/{'a' * 32}"),
            ("GET", f"/jobs/{'a' * 32}/output"),
            ("POST", "/predict"),
            ("GET", "/models"),
            ("POST", "/models/v0001/activate"),
        ]:
            answer = client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert answer.status_code == 401, path
            assert client.request(method, path).status_code == 401, path
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)
