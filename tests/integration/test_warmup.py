"""The job server's JIT warm-up on real Spark: it trains in a scratch folder, leaves nothing behind,
and a real job stops it at once."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from pyspark.sql import SparkSession

from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.contract import new_upload_id, upload_key
from salesflow.sales.generate import generate_sales
from salesflow.services.jobs.app import create_app
from salesflow.services.jobs.engine import spark_engine
from salesflow.spark.warmup import CANCEL_LOGGERS, WARMUP_GROUP, WarmUp
from salesflow.storage import store_for
from tests.conftest import free_port
from tests.fixtures.servers import serving

pytestmark = pytest.mark.slow

#: A training of a 5,000-row file with few trees takes a few seconds warm on local[2].
TIMEOUT_S = 120


def _settings(root: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=root / "data",
        num_trees=3,  # the warm-up's subject is running Spark's code, not accuracy
        backtest_windows=1,
        holdout_months=3,
        train_requires_upload_record=False,  # no upload service here: files are put in the store
        _env_file=None,
        **overrides,  # type: ignore[arg-type]
    )


def _wait_for_a_warm_up_job(spark: SparkSession, seen: frozenset[int] = frozenset()) -> None:
    """Until a warm-up Spark job not in `seen` has started (the tracker keeps the group's
    finished jobs too, from earlier warm-ups of this session)."""
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + TIMEOUT_S
    while not set(tracker.getJobIdsForGroup(WARMUP_GROUP)) - seen:
        assert time.monotonic() < deadline, "the warm-up started no Spark job"
        time.sleep(0.05)


def test_warm_up_trains_in_a_scratch_folder_and_leaves_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    warm_up = WarmUp(settings, runs=2)
    warm_up.run(spark)
    assert len(warm_up.done) == 2 and all(s > 0 for s in warm_up.done)
    assert list(settings.data_dir.iterdir()) == []  # the scratch folder is gone
    assert ModelRegistry(settings.warehouse_path / "models").versions() == []
    # The caller's thread is out of the warm-up's job group again.
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None


def test_a_cluster_master_skips_the_warm_up(spark: SparkSession, tmp_path: Path) -> None:
    warm_up = WarmUp(_settings(tmp_path, spark_master="spark://127.0.0.1:7077"), runs=2)
    warm_up.run(spark)  # the session is local: only the setting says cluster
    assert warm_up.done == [] and warm_up._left.is_set()


def _levels(spark: SparkSession) -> list[str]:
    """The log4j levels of Spark's loggers that print a cancelled job as an ERROR."""
    manager = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager  # type: ignore[union-attr]
    return [str(manager.getLogger(name).getLevel().toString()) for name in CANCEL_LOGGERS]


def test_stop_cancels_a_running_warm_up(spark: SparkSession, tmp_path: Path) -> None:
    before = _levels(spark)
    seen = frozenset(spark.sparkContext.statusTracker().getJobIdsForGroup(WARMUP_GROUP))
    warm_up = WarmUp(_settings(tmp_path), runs=50)
    thread = threading.Thread(target=warm_up.run, args=(spark,), daemon=True)
    thread.start()
    _wait_for_a_warm_up_job(spark, seen)
    # The cancellation's SPARK_JOB_CANCELLED traces are expected: those loggers are off meanwhile.
    assert _levels(spark) == ["OFF"] * len(CANCEL_LOGGERS)
    stopped_at = time.monotonic()
    warm_up.stop()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    assert _levels(spark) == before
    assert time.monotonic() - stopped_at < 10  # cancelled, not left to finish its runs
    assert len(warm_up.done) < 50
    assert not any(p.name.startswith("jit-warmup-") for p in (tmp_path / "data").iterdir())


def test_a_job_stops_the_job_servers_warm_up_and_runs(spark: SparkSession, tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        jobs_port=free_port(),
        jobs_jit_warmup_runs=50,
        auth_token=SecretStr("warmup-token-" + "x" * 20),
    )
    engine = spark_engine(settings, ModelRegistry(settings.warehouse_path / "models"))
    assert engine.warm_up is not None and engine.warm_up.runs == 50
    app = create_app(
        settings, engine=dataclasses.replace(engine, stop=lambda: None), report=lambda *_: None
    )
    sales = tmp_path / "sales.csv"
    generate_sales(sales, rows=3000, seed=3)
    upload_id = new_upload_id()
    info = store_for(settings).put_file(upload_key(upload_id), sales)
    assert info.sha256 is not None
    seen = frozenset(spark.sparkContext.statusTracker().getJobIdsForGroup(WARMUP_GROUP))
    with serving(app, settings.jobs_port), JobServerClient(settings) as client:
        _wait_for_a_warm_up_job(spark, seen)
        job = client.train(upload_id, info.sha256)
        done = client.wait(job["job_id"], timeout=TIMEOUT_S)
    assert done["status"] == "succeeded", done
    assert engine.warm_up._left.is_set()  # stopped by the job, long before its 50 runs
    assert len(engine.warm_up.done) < 50
