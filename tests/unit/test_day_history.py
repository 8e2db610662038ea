"""The daily history reader on a small curated folder written here, and the job server's
/history?granularity=day over it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.services.jobs.app import create_app
from salesflow.serving.history import ALL, MAX_DAYS, daily_root, read_daily
from tests.unit.test_jobs_api import FakeSpark

SHA_A, SHA_B = "a" * 64, "b" * 64


def write_source(root: Path, folder: str, rows: list[tuple[str, str, date, float]]) -> None:
    """One daily source partition as the training job writes it (Spark DateType: date32)."""
    part = root / folder
    part.mkdir(parents=True)
    table = pa.table(
        {
            "store_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "date": pa.array([r[2] for r in rows], pa.date32()),
            "quantity": [r[3] for r in rows],
        }
    )
    pq.write_table(table, part / "part-00000-x.snappy.parquet")
    (part / "_source.json").write_text("{}")


@pytest.fixture
def daily(settings: Settings) -> Path:
    root = daily_root(settings.warehouse_path)
    write_source(
        root,
        f"source_sha256={SHA_A}",
        [
            ("s1", "p1", date(2024, 2, 27), 3.0),
            ("s1", "p1", date(2024, 3, 1), 4.0),  # Feb 28 and 29 (leap year) sold nothing
            ("s2", "p1", date(2024, 3, 2), 1.5),
        ],
    )
    # A second file with the same store/product/day: summed, as training sums it.
    write_source(root, f"source_sha256={SHA_B}", [("s1", "p1", date(2024, 3, 1), 0.5)])
    write_source(root, ".tmp-1", [("s1", "p1", date(2024, 3, 1), 1000.0)])  # being written
    return root


def test_one_series_is_zero_filled_between_its_first_and_last_day(daily: Path) -> None:
    found = read_daily(daily, "s1", "p1")
    assert found.dates == ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]
    assert found.quantities == [3.0, 0.0, 0.0, 4.5]
    assert found.to_dict()["days"][-1] == {"date": "2024-03-01", "quantity": 4.5}


def test_totals_and_the_last_days(daily: Path) -> None:
    totals = read_daily(daily)
    assert totals.dates[0] == "2024-02-27" and totals.dates[-1] == "2024-03-02"
    assert totals.quantities == [3.0, 0.0, 0.0, 4.5, 1.5]
    recent = read_daily(daily, ALL, "p1", last_days=2)
    assert recent.dates == ["2024-03-01", "2024-03-02"]
    assert recent.quantities == [4.5, 1.5]


def test_unknown_ids_bad_windows_and_no_daily_history(daily: Path, tmp_path: Path) -> None:
    assert read_daily(daily, "nope", "p1").dates == []
    assert read_daily(tmp_path / "none").dates == []
    with pytest.raises(InputError, match="last_days is 0"):
        read_daily(daily, last_days=0)
    with pytest.raises(InputError, match="store_id is empty"):
        read_daily(daily, "", "p1")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, engine=FakeSpark().engine())
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def test_history_endpoint_by_day(client: TestClient, daily: Path) -> None:
    body = client.get(
        "/history", params={"store_id": "s1", "product_id": "p1", "granularity": "day"}
    ).json()
    assert body["granularity"] == "day"
    assert [d["date"] for d in body["days"]][-2:] == ["2024-02-29", "2024-03-01"]
    assert [d["quantity"] for d in body["days"]] == [3.0, 0.0, 0.0, 4.5]
    recent = client.get("/history", params={"granularity": "day", "days": 1}).json()
    assert recent["days"] == [{"date": "2024-03-02", "quantity": 1.5}]
    # The monthly answer is unchanged (no monthly folder here: empty).
    assert client.get("/history").json()["months"] == []
    assert client.get("/history", params={"granularity": "week"}).status_code == 422
    too_many = client.get("/history", params={"granularity": "day", "days": MAX_DAYS + 1})
    assert too_many.status_code == 422
