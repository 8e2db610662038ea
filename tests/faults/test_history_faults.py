"""A training process killed in the middle of a replace: its folders are written, the history's
ledger is not replaced yet. The history must read as before, and the next writer sweeps the
leftovers and applies the change whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

import salesflow
from salesflow.config import Settings
from salesflow.faults import EXIT_CODE
from salesflow.sales import ledger
from tests.fixtures.data import sale, write_sales
from tests.integration.test_history_modes import BASE_TOTAL, ROWS, _add, _days, _total

pytestmark = pytest.mark.slow

#: A training process (a JVM of its own) reaching the fault point: ~15 s here, far less than this.
CRASH_TIMEOUT_S = 300


def _parts(curated: Path) -> list[str]:
    return sorted(p.name for folder in ("daily", "monthly") for p in (curated / folder).iterdir())


def test_a_crash_mid_replace_leaves_the_history_as_before(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    _add(spark, settings, write_sales(tmp_path / "jan.csv", ROWS), upload="a" * 32)
    curated = settings.warehouse_path / "curated"
    book_before = (curated / ledger.LEDGER_FILE).read_text()
    parts_before = _parts(curated)
    fix = write_sales(tmp_path / "fix.csv", [sale("10", "2021-01-02", "s1", "p1")])
    env = {
        **os.environ,
        "SALESFLOW_DATA_DIR": str(settings.data_dir),
        "SALESFLOW_CRASH_POINT": "curate.before_commit",
        "PYTHONPATH": str(Path(salesflow.__file__).parents[1]),
    }
    crashed = subprocess.run(
        [sys.executable, "-m", "salesflow.spark.train", str(fix)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=CRASH_TIMEOUT_S,
        check=False,
    )
    assert crashed.returncode == EXIT_CODE, crashed.stderr.decode()[-2000:]
    # Written: the first upload's rows without the corrected cell, and the correction's own.
    assert len(_parts(curated)) == len(parts_before) + 4
    assert (curated / ledger.LEDGER_FILE).read_text() == book_before
    assert _total(settings) == BASE_TOTAL and _days(settings, "s1")["2021-01-02"] == 6.0
    # The next writer applies the change whole and leaves only what the ledger names.
    stats = _add(spark, settings, fix)
    assert stats.appended and _days(settings, "s1")["2021-01-02"] == 10.0
    assert _total(settings) == BASE_TOTAL - 6 + 10
    assert len(_parts(curated)) == 4  # two uploads x day and month
