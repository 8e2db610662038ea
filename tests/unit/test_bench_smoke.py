"""The benchmark harness: its statistics, reports, summary, process sampling, and that the
competing engines in bench_aggregate compute exactly what salesflow's Spark path computes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench import run as bench_run
from bench.bench_aggregate import ENGINES
from bench.common import Context, Report, machine_info, percentiles, run_process
from bench.procs import same_memory
from pyspark.sql import SparkSession


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert percentiles(samples) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "p99": 3.0}
    assert percentiles([]) == {}


def test_targets_compare_in_the_right_direction() -> None:
    report = Report("x", "X", "smoke")
    assert report.target("ratio", 12.0, 10.0, "x").met is True
    assert report.target("ratio", 9.0, 10.0, "x").met is False
    assert report.target("seconds", 4.0, 5.0, "s", higher=False).met is True
    assert report.target("seconds", 6.0, 5.0, "s", higher=False).met is False
    assert report.target("missing", None, 5.0).met is None
    stretch = report.target("ours", 4.0, 5.0, "x", stretch=True)
    assert (stretch.met, stretch.as_text()) == (False, "stretch >= 5 x")


def test_report_json_carries_machine_info_and_feeds_the_summary(tmp_path: Path) -> None:
    report = Report("training", "Training", "smoke")
    report.add(variant="warm", wall_s=1.5)
    target = report.target("warm 20k", 1.5, 5.0, "s", higher=False)
    report.headline("warm training, 20k rows", "1.50 s", target)
    report.skip("cold", "salesflow.spark.train not importable")
    path = report.write(tmp_path, machine_info())

    data = json.loads(path.read_text())
    assert path.name == "training.json"
    for key in ("cores", "ram_mb", "python", "spark", "timestamp", "load_average"):
        assert key in data["machine"], key
    assert data["mode"] == "smoke"
    assert data["targets"][0]["met"] is True
    assert data["rows"] == [{"variant": "warm", "wall_s": 1.5}]

    summary = bench_run.summary_markdown(tmp_path)
    assert "| training (smoke, " in summary
    assert "| warm training, 20k rows | 1.50 s | <= 5 s | met |" in summary
    assert "skipped: salesflow.spark.train not importable" in summary


def test_summary_without_results_says_how_to_get_them(tmp_path: Path) -> None:
    assert "make bench" in bench_run.summary_markdown(tmp_path)


def test_smoke_leaves_out_full_only_benchmarks_unless_asked() -> None:
    smoke = bench_run.selected(bench_run.parse_args(["--smoke"]))
    assert "growth" not in smoke and "training" in smoke
    assert bench_run.selected(bench_run.parse_args(["--only", "growth"])) == ["growth"]
    assert "growth" in bench_run.selected(bench_run.parse_args([]))
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--only", "nonsense"])


def test_run_process_times_and_samples_peak_memory(tmp_path: Path) -> None:
    # The child holds ~80 MB for half a second: the sampler (every 0.1 s) must see it.
    code = "import time; b = bytearray(80 * 1024 * 1024); time.sleep(0.5); print('{\"ok\": 1}')"
    done = run_process([sys.executable, "-c", code], log=tmp_path / "err.log").check()
    assert done.last_json() == {"ok": 1}
    assert done.peak_mb >= 80
    assert done.seconds >= 0.5
    assert max(done.peak_by_name.values()) >= 80  # named after the process (python3.11 -> python)
    assert "python" in done.peak_by_name
    failed = run_process([sys.executable, "-c", "raise SystemExit(3)"], log=tmp_path / "e2.log")
    with pytest.raises(RuntimeError, match="exited 3"):
        failed.check()


@pytest.mark.skipif(sys.platform != "linux", reason="kcmp(2) is Linux's")
def test_same_memory_tells_a_shared_address_space_from_a_child_process() -> None:
    # A thread shares its process's address space, as a CLONE_VM child (posix_spawn) does until it
    # execs: the sampler must count such a child once. A forked child has memory of its own.
    import os
    import subprocess
    import threading

    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert thread.native_id is not None
        assert same_memory(os.getpid(), thread.native_id)
        assert not same_memory(os.getpid(), child.pid)
    finally:
        release.set()
        thread.join()
        child.kill()
        child.wait()
    assert not same_memory(os.getpid(), child.pid)  # gone: the kernel cannot say


#: Every reject reason once, plus accepted rows in both date formats, padded and decimal values.
MESSY_CSV = """product_id,product_name,product_price,store_id,store_name,quantity,date
p1,P,1,s1,S,4,2020-01-05
p1,P,1,s1,S, 2.5 ,2020-01-20 10:30:00
p2,P,1,s1,S,1e3,2020-02-01
p2,P,1,s2,S,7,2021-02-11
p1,P,1,,S,3,2020-01-05
,P,1,s1,S,3,2020-01-05
p1,P,1,s1,S,3,2020-13-45
p1,P,1,s1,S,3,yesterday
p1,P,1,s1,S,,2020-01-05
p1,P,1,s1,S,abc,2020-01-05
p1,P,1,s1,S,NaN,2020-01-05
p1,P,1,s1,S,inf,2020-01-05
p1,P,1,s1,S,-3,2020-01-05
"""


@pytest.mark.slow
def test_duckdb_and_polars_compute_what_salesflow_computes(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY_CSV)
    ctx = Context(smoke=True, results_dir=tmp_path / "r", work=tmp_path / "w", cache_dir=tmp_path)
    answers = {label: factory(ctx)(path) for label, (_module, factory) in ENGINES.items()}
    # 13 rows; 9 rejected; groups (s1,p1,2020-01), (s1,p2,2020-02), (s2,p2,2021-02); 4+2.5+1000+7.
    expected = (13, 3, 1013.5, 9)
    assert answers == dict.fromkeys(ENGINES, expected)


def test_forecast_over_http_fills_the_declared_query_parameters() -> None:
    from bench.bench_serving import _forecast_over_http
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    seen: list[tuple[str, str, str]] = []
    app = FastAPI()

    @app.get("/forecast")
    def forecast(store_id: str, product_id: str, period: str) -> dict[str, float]:
        seen.append((store_id, product_id, period))
        return {"predicted_quantity": 1.0}

    @app.get("/forecast2")
    def forecast2(store_id: str, horizon_weeks: int) -> dict[str, float]:
        return {"predicted_quantity": 1.0}

    routes = {r.path: r for r in app.routes if isinstance(r, APIRoute)}
    report = Report("serving", "Serving", "smoke")
    with TestClient(app) as client:
        _forecast_over_http(report, client, routes["/forecast"], [("s1", "p1", 2022, 4)] * 3)
        _forecast_over_http(report, client, routes["/forecast2"], [("s1", "p1", 2022, 4)])
    assert seen == [("s1", "p1", "2022-04")] * 3
    assert report.rows[0]["samples"] == 3
    assert report.skipped[0]["row"] == "(d) job server GET /forecast2 over HTTP"
    assert "horizon_weeks" in report.skipped[0]["why"]


def test_a_child_that_overruns_is_stopped_with_its_whole_group(tmp_path: Path) -> None:
    import subprocess
    import time

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_process([sys.executable, "-c", code], log=tmp_path / "err.log", timeout=2)
    status = Path(f"/proc/{int(pid_file.read_text())}/status")

    def alive() -> bool:
        try:
            return "State:\tZ" not in status.read_text()  # a zombie has already exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive():
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.1)


def test_forecast_over_http_sends_month_as_year_month() -> None:
    """The job server's GET /forecast takes `month` as "YYYY-MM" (optional, like `date`)."""
    from bench.bench_serving import _forecast_over_http
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    seen: list[tuple[str, str, str | None, str | None]] = []
    app = FastAPI()

    @app.get("/forecast")
    def forecast(
        store_id: str, product_id: str, month: str | None = None, date: str | None = None
    ) -> dict[str, float]:
        seen.append((store_id, product_id, month, date))
        return {"predicted_quantity": 1.0}

    route = next(r for r in app.routes if isinstance(r, APIRoute))
    report = Report("serving", "Serving", "smoke")
    with TestClient(app) as client:
        _forecast_over_http(report, client, route, [("s1", "p1", 2022, 4), ("s2", "p2", 2023, 11)])
    assert seen == [("s1", "p1", "2022-04", None), ("s2", "p2", "2023-11", None)]
    assert report.rows[0]["samples"] == 2
