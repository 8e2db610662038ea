"""Training and prediction end to end on real Spark: generated files, the curated history,
rejects, the registry, unseen ids, other file formats, S3 staging and the job entry points.

Trainings cost seconds each, so one 20k-row training is shared (module fixture) by every test
that only reads its results; the few tests that must train again use small tree counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from salesflow.config import Settings, get_settings
from salesflow.errors import ModelNotFoundError, TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.sales.contract import REQUIRED_COLUMNS
from salesflow.sales.generate import generate_sales
from salesflow.spark import predict as predict_job
from salesflow.spark import train as train_job
from salesflow.spark.curated import curated_path
from salesflow.spark.predict import (
    OUTPUT_COLUMNS,
    future_frame,
    predict,
    predict_frame,
    to_records,
    write_csv,
)
from salesflow.spark.train import TrainInput, TrainResult, train
from salesflow.storage import open_store
from tests.fixtures.data import rows_of

pytestmark = pytest.mark.slow

ROWS = 20_000
#: Twelve held-out months give 108 compared rows on the default catalogue (3 stores x 3
#: products); six give 54, too few for a stable model-vs-baseline comparison.
HOLDOUT_MONTHS = 12


@dataclass(frozen=True)
class Trained:
    settings: Settings
    registry: ModelRegistry
    result: TrainResult
    source: Path


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, _env_file=None, **overrides)


def _partitions(settings: Settings) -> list[str]:
    return sorted(p.name for p in curated_path(settings).glob("source_sha256=*"))


@pytest.fixture(scope="module")
def trained(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One warm training on a generated 20k-row file (default trees), shared by the module."""
    tmp = tmp_path_factory.mktemp("trained")
    source = tmp / "sales.csv"
    generate_sales(source, rows=ROWS, seed=0)
    settings = _settings(tmp / "data", holdout_months=HOLDOUT_MONTHS)
    registry = ModelRegistry(settings.warehouse_path / "models")
    stages: list[str] = []
    result = train(
        spark, settings, [TrainInput(source.as_uri())], registry=registry, progress=stages.append
    )
    assert stages[0].startswith("reading") and stages[-1] == "saving the model"
    return Trained(settings, registry, result, source)


@pytest.fixture
def predict_input(trained: Trained, tmp_path: Path) -> Path:
    """Three months after the training data, plus one row from a store the model never saw."""
    path = tmp_path / "next.csv"
    generate_sales(path, rows=600, seed=3, start=dt.date(2022, 4, 1), end=dt.date(2022, 6, 30))
    with path.open("a") as f:
        f.write("0c300e2585470be28b9d24c0,Legion 5,3500,new-store,New,5,2022-04-02\n")
    return path


def test_trains_on_20k_rows_and_beats_the_seasonal_naive_baseline(trained: Trained) -> None:
    result, settings = trained.result, trained.settings
    assert result.version == "v0001"
    assert (result.rows_read, result.rows_rejected, result.rejects_url) == (ROWS, 0, None)
    assert result.rows_aggregated == 3 * 3 * 51  # stores x products x months (2018-01..2022-03)
    assert result.date_range == {"first": "2018-01-01", "last": "2022-03-31"}
    metrics = result.metrics
    assert metrics["holdout_months"] == HOLDOUT_MONTHS and metrics["holdout_rows"] == 108
    assert metrics["model"]["wape"] < metrics["baseline"]["wape"], metrics
    assert metrics["model"]["rmse"] > 0 and metrics["model"]["mae"] > 0
    assert set(result.timings) == {"read_clean_aggregate", "evaluate", "fit", "save", "final_fit"}
    sha = hashlib.sha256(trained.source.read_bytes()).hexdigest()
    assert _partitions(settings) == [f"source_sha256={sha}"]
    active = trained.registry.active()
    assert active is not None and active.version == "v0001"
    meta = active.metadata
    assert meta["inputs"] == [
        {"url": trained.source.as_uri(), "sha256": sha, "upload_id": None, "appended": True}
    ]
    assert (
        meta["parameters"]["maxBins"] == 32 and meta["parameters"]["regressor"] == "random_forest"
    )
    assert len(meta["stores"]) == 3 and len(meta["products"]) == 3
    assert meta["metrics"] == metrics and meta["status"] == "active"
    assert meta["spark_version"].startswith("4.")
    assert (active.pipeline_path / "stages").is_dir()


def test_predicts_a_csv_and_flags_an_unseen_store(
    spark: SparkSession, trained: Trained, predict_input: Path, tmp_path: Path
) -> None:
    result = predict(spark, trained.settings, str(predict_input), registry=trained.registry)
    assert result.version == "v0001"
    assert result.unknown_stores == ["new-store"] and result.unknown_products == []
    frame = result.frame
    assert frame.columns == list(OUTPUT_COLUMNS)
    assert result.rows == frame.count() == 3 * 3 * 3 + 1
    bad = frame.filter(
        (F.col("predicted_quantity") < 0)
        | F.col("actual_quantity").isNull()
        | (F.abs(F.col("error") - (F.col("predicted_quantity") - F.col("actual_quantity"))) > 1e-6)
    )
    assert bad.count() == 0
    flagged = rows_of(frame.filter("unknown_store"), ["store_id", "period", "actual_quantity"])
    assert flagged == [("new-store", "2022-04", 5.0)]
    records = to_records(frame)
    assert records[0].keys() == set(OUTPUT_COLUMNS) and len(records) == result.rows
    out = write_csv(frame, tmp_path / "predictions.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(OUTPUT_COLUMNS) and len(lines) == result.rows + 1


def test_predicts_without_quantities_with_a_named_version(
    spark: SparkSession, trained: Trained, predict_input: Path, tmp_path: Path
) -> None:
    lines = predict_input.read_text().splitlines()
    q = REQUIRED_COLUMNS.index("quantity")
    stripped = tmp_path / "no-quantity.csv"
    stripped.write_text(
        "\n".join(",".join(c for i, c in enumerate(ln.split(",")) if i != q) for ln in lines) + "\n"
    )
    result = predict(
        spark, trained.settings, str(stripped), registry=trained.registry, version="v0001"
    )
    assert result.rows == 28
    assert (
        result.frame.filter(
            F.col("actual_quantity").isNotNull() | F.col("error").isNotNull()
        ).count()
        == 0
    )
    with pytest.raises(ModelNotFoundError):
        predict(spark, trained.settings, str(stripped), registry=trained.registry, version="v9")


def test_future_frame_scores_every_store_and_product(spark: SparkSession, trained: Trained) -> None:
    active = trained.registry.require_active()
    meta = active.metadata
    future = future_frame(spark, meta["stores"], meta["products"], "2022-04", months=12)
    scored = predict_frame(active, future)
    summary = scored.agg(
        F.count(F.lit(1)), F.min("predicted_quantity"), F.sum(F.col("unknown_store").cast("int"))
    ).first()
    assert summary is not None and tuple(summary) == (108, summary[1], 0)
    assert summary[1] > 0


def test_too_many_rejects_fails_and_keeps_the_active_model(
    spark: SparkSession, trained: Trained, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    generate_sales(path, rows=900, seed=4)
    with path.open("a") as f:
        for i in range(100):  # 10% of 1000 rows, above the 5% limit
            f.write(f"p{i},n,1,s1,s,3,2021-13-{i % 28 + 1:02d}\n")
    versions = [v.version for v in trained.registry.versions()]
    with pytest.raises(TooManyRejectsError) as caught:
        train(spark, trained.settings, [TrainInput(str(path))], registry=trained.registry)
    message = str(caught.value)
    assert message == (
        "100 of 1000 rows rejected (10.0%) > limit 5%: bad_date 100; "
        "the rejected rows are in the job's rejects file"
    )
    counts = caught.value.counts
    assert (counts["rows_read"], counts["rows_rejected"]) == (1000, 100)
    assert counts["rejects_by_reason"] == {"bad_date": 100}
    rejects = Path(counts["rejects_url"].removeprefix("file://"))
    assert rejects.read_text().splitlines()[0] == ",".join([*REQUIRED_COLUMNS, "reject_reason"])
    assert len(rejects.read_text().splitlines()) == 101
    assert [v.version for v in trained.registry.versions()] == versions
    assert trained.registry.require_active().version == "v0001"
    assert len(_partitions(trained.settings)) == 1  # the failed file was not curated


def test_new_upload_grows_history_and_a_repeated_one_does_not(
    spark: SparkSession, trained: Trained, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "data", num_trees=5)  # accuracy is not this test's subject
    shutil.copytree(trained.settings.warehouse_path, settings.warehouse_path)
    registry = ModelRegistry(settings.warehouse_path / "models")
    fresh = tmp_path / "more.csv"
    generate_sales(fresh, rows=4_900, seed=9)
    with fresh.open("a") as f:
        for i in range(60):  # 60 of 4960 = 1.2% rejects: accepted, but written out
            f.write(f"p{i},=cmd(),1,s{i},s,-{i + 1},2021-01-01\n")
        for i in range(40):
            f.write(f"p{i},n,1,s{i},s,3,yesterday\n")
    result = train(
        spark,
        settings,
        # new sales of the same stores and days: they add up (the default, replace, would
        # supersede the first file's rows of those days: tests/integration/test_history_modes.py)
        [
            TrainInput(trained.source.as_uri()),
            TrainInput(str(fresh), upload_id="a" * 32, mode="append"),
        ],
        registry=registry,
        force=True,  # this test is about the history, not the promotion gate (test_promotion.py)
    )
    assert [i["appended"] for i in result.inputs] == [False, True]
    assert len(_partitions(settings)) == 2
    assert result.version == "v0002" and registry.require_active().version == "v0002"
    assert result.rows_read == ROWS + 5_000 and result.rows_rejected == 100
    assert result.rejects_by_reason == {"negative_quantity": 60, "bad_date": 40}
    assert result.rows_aggregated == 459  # same catalogue and months: the monthly sums grow
    assert result.rejects_url is not None
    rejects = Path(result.rejects_url.removeprefix("file://")).read_text().splitlines()
    assert len(rejects) == 101 and "p0,'=cmd(),1,s0,s,-1,2021-01-01,negative_quantity" in rejects
    meta = registry.require_active().metadata
    assert len(meta["training_sources"]) == 2 and meta["inputs"][1]["upload_id"] == "a" * 32
    assert meta["trained_on"]["uploads"] == 2 and meta["trained_on"]["upload_ids"][1] == "a" * 32
    assert [h["version"] for h in registry.history()] == ["v0001", "v0002"]


def test_original_format_from_s3_and_tab_separated_files_train(
    spark: SparkSession, s3_settings: Settings, tmp_path: Path
) -> None:
    settings = s3_settings.model_copy(update={"num_trees": 5})
    original = tmp_path / "original.csv"  # comma, 24-hex ids, YYYY-MM-DD HH:MM:SS
    generate_sales(original, rows=3_000, seed=11, timestamps=True)
    first = original.read_text().splitlines()[1].split(",")
    assert re.fullmatch(r"[0-9a-f]{24}", first[0]) and re.fullmatch(r"[0-9a-f]{24}", first[3])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first[-1])
    store = open_store(settings.storage_url, settings)
    url = store.put_file("uploads/original.csv", original).url
    tabbed = tmp_path / "tabbed.csv"
    generate_sales(tabbed, rows=2_000, seed=12, delimiter="\t")
    result = train(spark, settings, [TrainInput(url), TrainInput(str(tabbed))])
    assert result.rows_read == 5_000 and result.rows_rejected == 0
    assert [i["appended"] for i in result.inputs] == [True, True]
    assert result.version == "v0001"
    assert len(_partitions(settings)) == 2


@pytest.fixture
def env_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point get_settings() (used by the job entry points) at a temp data folder."""
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("SALESFLOW_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_job_entry_points(
    spark: SparkSession,
    trained: Trained,
    predict_input: Path,
    env_settings: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(trained.settings.warehouse_path, env_settings / "warehouse")
    out = env_settings.parent / "out.csv"
    assert predict_job.main([str(predict_input), "--model", "v0001", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 602  # one answer per input row
    assert "601 rows scored with model v0001" in capsys.readouterr().err
    argv = [str(predict_input), "--model", "v0001", "-o", str(out), "--per-month"]
    assert predict_job.main(argv) == 0
    assert len(out.read_text().splitlines()) == 29
    assert "28 rows scored with model v0001" in capsys.readouterr().err
    assert train_job.main([str(env_settings.parent / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
