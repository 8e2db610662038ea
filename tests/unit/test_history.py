"""The history reader on a small curated folder written here, and the job server's /history and
/series over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.services.jobs.app import create_app
from salesflow.serving.history import ALL, curated_root, read_history, read_monthly, series_ids
from tests.unit.test_cli import invoke
from tests.unit.test_jobs_api import FakeSpark

SHA_A, SHA_B = "a" * 64, "b" * 64


def write_source(root: Path, folder: str, rows: list[tuple[str, str, int, int, float]]) -> None:
    """One source partition as the training job writes it (Spark types: int32 year/month)."""
    part = root / folder
    part.mkdir(parents=True)
    table = pa.table(
        {
            "store_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "year": pa.array([r[2] for r in rows], pa.int32()),
            "month": pa.array([r[3] for r in rows], pa.int32()),
            "quantity": [r[4] for r in rows],
        }
    )
    pq.write_table(table, part / "part-00000-x.snappy.parquet")
    (part / "_source.json").write_text("{}")
    (part / "_SUCCESS").write_text("")


@pytest.fixture
def curated(settings: Settings) -> Path:
    root = curated_root(settings.warehouse_path)
    write_source(
        root,
        f"source_sha256={SHA_A}",
        [
            ("2", "p1", 2021, 1, 10.0),
            ("2", "p1", 2021, 2, 20.0),
            ("10", "p1", 2021, 1, 1.0),
            ("2", "p2", 2020, 12, 5.0),
        ],
    )
    # A second file with an overlapping month: the same store/product/month is summed.
    write_source(
        root, f"source_sha256={SHA_B}", [("2", "p1", 2021, 2, 2.5), ("x", "p3", 2021, 3, 7)]
    )
    # A write in progress (dot folder) is invisible, as it is to Spark.
    write_source(root, ".tmp-123", [("2", "p1", 2021, 1, 1000.0)])
    return root


def test_one_series_sums_sources_per_month(curated: Path) -> None:
    found = read_monthly(curated, "2", "p1")
    assert found.months == ["2021-01", "2021-02"]
    assert found.quantities == [10.0, 22.5]
    assert found.to_dict()["months"] == [
        {"month": "2021-01", "quantity": 10.0},
        {"month": "2021-02", "quantity": 22.5},
    ]


def test_totals_across_stores_and_products(curated: Path) -> None:
    totals = read_monthly(curated)
    assert totals.months == ["2020-12", "2021-01", "2021-02", "2021-03"]
    assert totals.quantities == [5.0, 11.0, 22.5, 7.0]
    assert read_monthly(curated, "2", ALL).quantities == [5.0, 10.0, 22.5]
    assert read_monthly(curated, ALL, "p1").quantities == [11.0, 22.5]


def test_unknown_ids_and_missing_history_are_empty(curated: Path, tmp_path: Path) -> None:
    assert read_monthly(curated, "nope", "p1").months == []
    assert read_monthly(tmp_path / "none").months == []
    assert series_ids(tmp_path / "none").stores == []


def test_bad_ids_say_what_is_wrong(curated: Path) -> None:
    with pytest.raises(InputError, match="store_id is empty"):
        read_monthly(curated, " ", "p1")
    with pytest.raises(InputError, match="product_id is longer"):
        read_monthly(curated, "2", "p" * 500)


def test_series_ids_sort_numbers_numerically(curated: Path) -> None:
    found = series_ids(curated)
    assert found.stores == ["2", "10", "x"]
    assert found.products == ["p1", "p2", "p3"]


def test_read_history_picks_the_granularity(curated: Path, settings: Settings) -> None:
    assert read_history(settings.warehouse_path, "2", "p1") == read_monthly(curated, "2", "p1")
    assert read_history(settings.warehouse_path, granularity="day").to_dict()["days"] == []
    with pytest.raises(InputError, match="granularity is 'week'"):
        read_history(settings.warehouse_path, granularity="week")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, engine=FakeSpark().engine())
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def test_the_job_server_answers_history_and_series(client: TestClient, curated: Path) -> None:
    body = client.get("/history", params={"store_id": "2", "product_id": "p1"}).json()
    assert body == {
        "store_id": "2",
        "product_id": "p1",
        "months": [{"month": "2021-01", "quantity": 10.0}, {"month": "2021-02", "quantity": 22.5}],
    }
    totals = client.get("/history").json()
    assert totals["store_id"] == ALL and len(totals["months"]) == 4
    assert client.get("/series").json() == {
        "stores": ["2", "10", "x"],
        "products": ["p1", "p2", "p3"],
        "names": {  # this history has no names file: a history written before names were kept
            "stores": {"2": None, "10": None, "x": None},
            "products": {"p1": None, "p2": None, "p3": None},
        },
    }
    bad = client.get("/history", params={"store_id": ""})
    assert bad.status_code == 400
    assert "store_id is empty" in bad.json()["error"]["message"]
    assert client.get("/history", params={"product_id": "p" * 201}).status_code == 422


def test_history_and_series_need_the_token(client: TestClient, curated: Path) -> None:
    for path in ("/history", "/series"):
        answer = client.get(path, headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 401, path


def test_the_job_server_lists_and_removes_uploads(client: TestClient, curated: Path) -> None:
    """A history written before the ledger: one upload per folder, until one is removed."""
    listed = client.get("/history/uploads").json()["uploads"]
    assert [(u["id"], u["status"]) for u in listed] == [(SHA_A[:16], "live"), (SHA_B[:16], "live")]
    answer = client.post(f"/history/uploads/{SHA_B[:12]}/remove", json={"reason": "a test file"})
    assert answer.status_code == 200, answer.text
    removed = answer.json()
    assert removed["status"] == "removed" and removed["removed"]["reason"] == "a test file"
    assert removed["removed"]["by"] == "job-server api" and removed["removed"]["at"]
    assert read_monthly(curated, "2", "p1").quantities == [10.0, 20.0]  # B's 2.5 is gone
    assert client.get("/series").json()["stores"] == ["2", "10"]
    assert [u["id"] for u in client.get("/history/uploads").json()["uploads"]] == [SHA_A[:16]]
    everything = client.get("/history/uploads", params={"removed": True}).json()["uploads"]
    assert len(everything) == 2 and not (curated / f"source_sha256={SHA_B}").exists()
    again = client.post(f"/history/uploads/{SHA_B[:16]}/remove", json={"reason": "twice"})
    assert again.status_code == 400 and "removed already" in again.json()["error"]["message"]
    missing = client.post("/history/uploads/nosuchupload/remove", json={"reason": "x"})
    assert missing.status_code == 404
    assert client.post(f"/history/uploads/{SHA_A}/remove", json={}).status_code == 422
    wrong = client.get("/history/uploads", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401


def test_the_cli_lists_and_removes_uploads(cli_settings: Settings) -> None:
    curated = curated_root(cli_settings.warehouse_path)
    write_source(curated, f"source_sha256={SHA_A}", [("2", "p1", 2021, 1, 10.0)])
    write_source(curated, f"source_sha256={SHA_B}", [("2", "p1", 2021, 2, 2.5)])
    listed = invoke("history")
    assert listed.exit_code == 0, listed.output
    assert SHA_A[:16] in listed.output and "live" in listed.output
    removed = invoke("history", "remove", SHA_A[:16], "--reason", "wrong month", "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.output)["removed"]["reason"] == "wrong month"
    after = json.loads(invoke("history", "--json").output)
    assert [u["id"] for u in after] == [SHA_B[:16]]
    assert [u["status"] for u in json.loads(invoke("history", "--all", "--json").output)] == [
        "removed",
        "live",
    ]
    assert invoke("history", "remove", "nosuchupload", "--reason", "x").exit_code != 0
    assert read_monthly(curated).months == ["2021-02"]
