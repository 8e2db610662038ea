"""Forecast latency and batch throughput: new JVM per request vs warm Spark vs in-process Forecaster.

(a) `python -m salesflow.spark.predict` per request (what the original project did per call);
(b) `predict_frame` + `collect()` of one row on the warm SparkSession;
(c) `salesflow.serving.forest.Forecaster`, the saved forest walked with numpy in this process;
plus 1,000-row batch scoring for (b) and (c), the model hot-reload time, and the job server over
HTTP on loopback (uvicorn in a thread, sharing this process's warm session): (d) `GET /forecast`,
(e) `POST /predict` with a 1-row and (f) a 1,000-row CSV; (g) `GET /forecast` of a version
answered from its forecast table (AutoETS alone, trained on the same file). The server is built with the real
engine's in-process `predict_now`, as `salesflow serve jobs` builds it, and the report says which
path answered. The same model and the same requests are used throughout; (b) and (c) are checked
to give the same numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from bench.common import (
    Context,
    Report,
    free_port,
    median,
    missing_module,
    percentiles,
    python_argv,
    run_process,
    timed,
)

NAME = "serving"
TITLE = "Serving: one forecast and 1,000-row batches, new JVM vs warm Spark vs in-process"

#: Single-request samples per variant and mode (a new JVM costs ~20 s a request, so few of those).
SAMPLES = {
    "smoke": {"jvm": 1, "spark": 20, "forecaster": 500, "http": 20},
    "full": {"jvm": 3, "spark": 100, "forecaster": 5000, "http": 200},
}
#: Repetitions of the 1,000-row batch and of the model reload.
BATCH_REPS = {"smoke": 3, "full": 10}
RELOAD_REPS = {"smoke": 3, "full": 10}
BATCH_ROWS = 1_000
#: Forecast months asked for: the year after the generated history ends (2022-03).
FIRST_YEAR, FIRST_MONTH = 2022, 4
#: Goals from the project's issue.
TARGET_HTTP_P50_MS = 5.0
TARGET_JVM_RATIO = 1000.0
TARGET_BATCH_ROWS_S = 150_000.0
TARGET_RELOAD_S = 0.5


def requests_for(stores: list[str], products: list[str], n: int) -> list[tuple[str, str, int, int]]:
    """`n` seeded (store, product, year, month) requests over the next 12 months."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        ahead = int(rng.integers(12))
        year, month = divmod(FIRST_MONTH - 1 + ahead, 12)
        out.append(
            (
                stores[int(rng.integers(len(stores)))],
                products[int(rng.integers(len(products)))],
                FIRST_YEAR + year,
                month + 1,
            )
        )
    return out


def columns_of(requests: list[tuple[str, str, int, int]]) -> dict[str, list[Any]]:
    return {
        "store_id": [r[0] for r in requests],
        "product_id": [r[1] for r in requests],
        "year": [r[2] for r in requests],
        "month": [r[3] for r in requests],
    }


def latency_row(report: Report, variant: str, samples: list[float], **extra: Any) -> dict[str, Any]:
    pct = percentiles(samples)
    return report.add(
        variant=variant,
        samples=len(samples),
        p50_ms=pct["p50"] * 1000,
        p95_ms=pct["p95"] * 1000,
        p99_ms=pct["p99"] * 1000,
        **extra,
    )


def new_jvm(
    ctx: Context, report: Report, settings: Any, request: tuple[str, str, int, int]
) -> float:
    """(a) `python -m salesflow.spark.predict ONE_ROW.csv` per request."""
    folder = ctx.work / "serving-jvm"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "one-row.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["product_id", "product_name", "product_price", "store_id", "store_name", "date"]
        )
        writer.writerow(
            [request[1], "p", 1, request[0], "s", f"{request[2]:04d}-{request[3]:02d}-01"]
        )
    samples = []
    for i in range(SAMPLES[ctx.mode]["jvm"]):
        run = run_process(
            python_argv("-m", "salesflow.spark.predict", str(path)),
            env=ctx.child_env(settings),
            cwd=folder,
            log=folder / f"stderr-{i}.log",
        ).check()
        samples.append(run.seconds)
    latency_row(report, "(a) new JVM per request", samples)
    return median(samples)


def warm_spark(
    ctx: Context, report: Report, version: Any, requests: list[tuple[str, str, int, int]]
) -> tuple[float, np.ndarray]:
    """(b) one-row and 1,000-row `predict_frame(...).collect()` on the warm session."""
    from salesflow.spark.predict import predict_frame

    spark = ctx.spark()
    schema = "store_id string, product_id string, year int, month int"

    def score(rows: list[tuple[str, str, int, int]]) -> list[float]:
        frame = predict_frame(version, spark.createDataFrame(rows, schema))
        return [r["predicted_quantity"] for r in frame.select("predicted_quantity").collect()]

    score(requests[:1])  # loads the model into predict's cache, compiles the plan
    samples = []
    for request in requests[: SAMPLES[ctx.mode]["spark"]]:
        with timed() as t:
            score([request])
        samples.append(t[0])
    batch = requests[:BATCH_ROWS]
    batch_times, predictions = [], []
    for _ in range(BATCH_REPS[ctx.mode]):
        with timed() as t:
            predictions = score(batch)
        batch_times.append(t[0])
    rows_per_s = BATCH_ROWS / median(batch_times)
    latency_row(report, "(b) warm SparkSession transform", samples, batch_rows_per_s=rows_per_s)
    return median(samples), np.asarray(predictions)


def forecaster(
    ctx: Context, report: Report, version: Any, requests: list[tuple[str, str, int, int]]
) -> tuple[float, np.ndarray, Any]:
    """(c) the in-process Forecaster: single rows, 1,000-row batches, reload time."""
    from salesflow.serving.forest import Forecaster

    model = Forecaster.load(version.pipeline_path)
    singles = [columns_of([r]) for r in requests[: SAMPLES[ctx.mode]["forecaster"]]]
    model.predict(singles[0])
    samples = []
    for columns in singles:
        start = time.perf_counter()
        model.predict(columns)
        samples.append(time.perf_counter() - start)
    batch = columns_of(requests[:BATCH_ROWS])
    batch_times = []
    for _ in range(BATCH_REPS[ctx.mode]):
        with timed() as t:
            out = model.predict(batch)
        batch_times.append(t[0])
    reloads = []
    for _ in range(RELOAD_REPS[ctx.mode]):
        with timed() as t:
            Forecaster.load(version.pipeline_path)
        reloads.append(t[0])
    latency_row(
        report,
        "(c) Forecaster in-process (numpy)",
        samples,
        batch_rows_per_s=BATCH_ROWS / median(batch_times),
        reload_ms=median(reloads) * 1000,
    )
    return median(samples), np.maximum(out, 0.0), model  # predict_frame clips at 0 too


def spark_reload(ctx: Context, report: Report, version: Any) -> float:
    """PipelineModel.load of the same folder on the warm session (what a Spark server reloads)."""
    from pyspark.ml import PipelineModel

    ctx.spark()
    times = []
    for _ in range(max(1, RELOAD_REPS[ctx.mode] // 3)):
        with timed() as t:
            PipelineModel.load(str(version.pipeline_path))
        times.append(t[0])
    return median(times)


@contextmanager
def job_server(settings: Any) -> Iterator[tuple[str, Any]]:
    """The job server app under uvicorn in a thread on a free loopback port; yields (URL, app).

    Its engine is the real one (in-process `predict_now` included) except that it shares this
    process's session and does not stop it when the server stops.
    """
    import uvicorn

    from salesflow.registry import ModelRegistry
    from salesflow.services.jobs.app import create_app

    engine = None
    try:
        from salesflow.services.jobs.engine import spark_engine

        real = spark_engine(settings, ModelRegistry(settings.warehouse_path / "models"))
        engine = dataclasses.replace(real, stop=lambda: None)
    except (ImportError, TypeError, AttributeError):
        engine = None  # the default engine then stops our session at shutdown; ctx restarts it
    app = create_app(settings, engine=engine) if engine is not None else create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.jobs_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="bench-job-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120  # the readiness probe waits for the warm session
        import httpx

        url = f"http://127.0.0.1:{settings.jobs_port}"
        while time.monotonic() < deadline:
            try:
                if server.started and httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("job server not ready within 120 s")
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


#: How a GET /forecast query parameter is filled from a (store, product, year, month) request.
_QUERY_VALUES: dict[str, Callable[[tuple[str, str, int, int]], str]] = {
    "store_id": lambda r: r[0],
    "store": lambda r: r[0],
    "product_id": lambda r: r[1],
    "product": lambda r: r[1],
    "period": lambda r: f"{r[2]:04d}-{r[3]:02d}",
    "month": lambda r: f"{r[2]:04d}-{r[3]:02d}",  # the route's month is "YYYY-MM"
    "year": lambda r: str(r[2]),
}


def _forecast_over_http(
    report: Report,
    client: Any,
    route: Any,
    requests: list[tuple[str, str, int, int]],
    label: str = "",
) -> None:
    """Time GET /forecast, filling the query parameters the route declares (skip if it cannot)."""
    label = label or f"(d) job server GET {route.path} over HTTP"
    params = route.dependant.query_params
    required = [p for p in params if p.field_info.is_required()]
    unknown = [p.alias for p in required if p.alias not in _QUERY_VALUES]
    if unknown or "{" in route.path:
        report.skip(label, f"cannot fill the route's parameters {unknown or route.path}")
        return
    fill = {p.alias: _QUERY_VALUES[p.alias] for p in params if p.alias in _QUERY_VALUES}
    samples = []
    for request in requests:
        query = {name: value(request) for name, value in fill.items()}
        with timed() as t:
            response = client.get(route.path, params=query)
        if response.status_code != 200:
            report.skip(label, f"answered {response.status_code}: {response.text[:150]}")
            return
        samples.append(t[0])
    latency_row(report, label, samples)


def _api_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, including those of routers that newer FastAPI keeps included, not copied.

    (A route of an included router is yielded as the router holds it: the bench apps include
    theirs without a prefix.)
    """
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(list(inner.routes))
        else:
            yield route


def _predict_path(app: Any) -> str:
    """Which path the server's synchronous POST /predict takes: in-process or the Spark session."""
    state = getattr(app.state, "server", None)
    runner = getattr(state, "runner", None)
    if runner is None:
        return "unknown"
    return "in-process forest" if runner.predict_now_fn is not None else "Spark session"


def _csv_of(requests: list[tuple[str, str, int, int]], path: Any) -> Any:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["product_id", "product_name", "product_price", "store_id", "store_name", "date"]
        )
        for store, product, year, month in requests:
            writer.writerow([product, "p", 1, store, "s", f"{year:04d}-{month:02d}-01"])
    return path


def _post_predict(
    report: Report, client: Any, path: Any, reps: int, label: str, rows: int, how: str
) -> None:
    samples = []
    for _ in range(reps):
        with timed() as t, path.open("rb") as handle:
            response = client.post(
                "/predict",
                files={"file": (path.name, handle, "text/csv")},
                headers={"Accept": "application/json"},
                timeout=300,
            )
        if response.status_code != 200:
            raise RuntimeError(
                f"POST /predict answered {response.status_code}: {response.text[:200]}"
            )
        scored = int(response.json().get("row_count") or 0)
        if scored < 1:
            raise RuntimeError(f"POST /predict scored nothing: {response.text[:200]}")
        samples.append(t[0])
    # row_count counts distinct (store, product, month) forecasts: fewer than the input rows.
    latency_row(
        report,
        label,
        samples,
        batch_rows_per_s=rows / median(samples),
        forecasts=scored,
        answered_by=how,
    )


def _serving_settings(settings: Any) -> tuple[Any, list[Any]]:
    """Settings on the same data folder (the model registry) and a free port (URLs derived
    again from it), and the job server's GET forecast routes."""
    from fastapi.routing import APIRoute

    from salesflow.services.jobs.app import create_app

    http_settings = type(settings)(
        data_dir=settings.data_dir,
        jobs_port=free_port(),
        candidates=settings.candidates,
        # No JIT warm-up: its trainings in the background would be timed with the requests
        # (the warm session is this process's, warmed by the benchmark's own training).
        jobs_jit_warmup_runs=0,
        _env_file=None,
    )
    probe = create_app(http_settings)
    forecast_routes = [
        r
        for r in _api_routes(probe.routes)
        if isinstance(r, APIRoute) and "forecast" in r.path and "GET" in (r.methods or ())
    ]
    return http_settings, forecast_routes


def table_over_http(
    ctx: Context, report: Report, settings: Any, requests: list[tuple[str, str, int, int]]
) -> None:
    """(g) GET /forecast of a version answered from its forecast table (an AutoETS winner)."""
    import httpx

    from salesflow.auth import auth_headers

    label = "(g) job server GET /forecast over HTTP, forecast-table version"
    http_settings, forecast_routes = _serving_settings(settings)
    if not forecast_routes:
        report.skip(label, "the job server has no GET /forecast route")
        return
    n = SAMPLES[ctx.mode]["http"]
    with (
        job_server(http_settings) as (url, _),
        httpx.Client(base_url=url, headers=auth_headers(http_settings)) as client,
    ):
        _forecast_over_http(report, client, forecast_routes[0], requests[:n], label)


def over_http(
    ctx: Context, report: Report, settings: Any, requests: list[tuple[str, str, int, int]]
) -> None:
    """GET /forecast when the job server has it; POST /predict with a one-row CSV otherwise too."""
    import httpx

    from salesflow.auth import auth_headers

    http_settings, forecast_routes = _serving_settings(settings)
    n = SAMPLES[ctx.mode]["http"]
    with (
        job_server(http_settings) as (url, app),
        httpx.Client(base_url=url, headers=auth_headers(http_settings)) as client,
    ):
        if forecast_routes:
            _forecast_over_http(report, client, forecast_routes[0], requests[:n])
        else:
            report.skip(
                "(d) job server GET /forecast over HTTP",
                "the job server has no GET /forecast route",
            )
        how = _predict_path(app)
        report.notes.append(f"the job server's synchronous POST /predict runs on: {how}")
        folder = ctx.work / "serving-http"
        folder.mkdir(parents=True, exist_ok=True)
        one = _csv_of(requests[:1], folder / "one.csv")
        batch = _csv_of(requests[:BATCH_ROWS], folder / "batch.csv")
        _post_predict(
            report, client, one, max(3, n // 4), "(e) job server POST /predict, 1-row CSV, HTTP",
            1, how,
        )  # fmt: skip
        _post_predict(
            report, client, batch, BATCH_REPS[ctx.mode],
            f"(f) job server POST /predict, {BATCH_ROWS:,}-row CSV, HTTP", BATCH_ROWS, how,
        )  # fmt: skip


def run(ctx: Context) -> Report:
    report = Report(NAME, TITLE, ctx.mode)
    settings, version = ctx.trained_model(["forest"])
    report.notes.append(f"model {version.version}: the forest trained on the default 20k-row file")
    from salesflow.spark.predict import load_model, model_labels

    stores, products = model_labels(load_model(version))
    n = max(BATCH_ROWS, max(SAMPLES[ctx.mode].values()))
    requests = requests_for(stores, products, n)

    jvm_s = new_jvm(ctx, report, settings, requests[0])
    spark_s, spark_batch = warm_spark(ctx, report, version, requests)
    why = missing_module("salesflow.serving.forest")
    fc_s: float | None = None
    if why:
        report.skip("(c) Forecaster in-process", why)
    else:
        fc_s, fc_batch, _ = forecaster(ctx, report, version, requests)
        diff = float(np.max(np.abs(fc_batch - spark_batch)))
        report.notes.append(
            f"Forecaster vs Spark on {BATCH_ROWS:,} rows: max |difference| = {diff:.3g}"
        )
        report.ratios["warm Spark / Forecaster (p50)"] = round(spark_s / fc_s, 1)
        report.ratios["new JVM / Forecaster (p50)"] = round(jvm_s / fc_s, 1)
    report.ratios["new JVM / warm Spark (p50)"] = round(jvm_s / spark_s, 1)
    spark_reload_s = spark_reload(ctx, report, version)
    report.notes.append(f"PipelineModel.load on the warm session: {spark_reload_s * 1000:.0f} ms")

    why = missing_module("salesflow.services.jobs.app", "uvicorn")
    if why:
        report.skip("(d)-(f) job server over HTTP", why)
    else:
        over_http(ctx, report, settings, requests)
        table_settings, table_version = ctx.trained_model(["AutoETS"])
        assert (table_version.path / "forecasts.parquet").exists()
        report.notes.append(
            f"(g): model {table_version.version}, AutoETS alone on the same file, answered from "
            "its forecast table"
        )
        table_over_http(ctx, report, table_settings, requests)

    rows = {r["variant"][:3]: r for r in report.rows}
    report.headline("one forecast, new JVM per request (p50)", f"{jvm_s:.1f} s")
    report.headline("one forecast, warm Spark transform (p50)", f"{spark_s * 1000:.0f} ms")
    if fc_s is not None:
        report.headline(
            "one forecast, in-process Forecaster (p50 / p99)",
            f"{fc_s * 1e6:.0f} us / {rows['(c)']['p99_ms'] * 1000:.0f} us",
        )
        rate = rows["(c)"]["batch_rows_per_s"]
        report.headline(
            "1,000-row batch: Forecaster vs warm Spark",
            f"{rate:,.0f} vs {rows['(b)']['batch_rows_per_s']:,.0f} rows/s",
            report.target("in-process batch scoring", rate, TARGET_BATCH_ROWS_S, "rows/s"),
        )
        reload_s = rows["(c)"]["reload_ms"] / 1000
        report.headline(
            "model hot reload: Forecaster.load vs PipelineModel.load",
            f"{reload_s * 1000:.0f} ms vs {spark_reload_s * 1000:.0f} ms",
            report.target("Forecaster hot reload", reload_s, TARGET_RELOAD_S, "s", higher=False),
        )
    if "(d)" in rows:
        p50 = rows["(d)"]["p50_ms"]
        report.headline(
            "GET /forecast over HTTP (p50 / p95 / p99)",
            f"{p50:.1f} / {rows['(d)']['p95_ms']:.1f} / {rows['(d)']['p99_ms']:.1f} ms",
            report.target("GET /forecast p50", p50, TARGET_HTTP_P50_MS, "ms", higher=False),
        )
        ratio = jvm_s * 1000 / p50
        report.ratios["new JVM / GET /forecast (p50)"] = round(ratio, 1)
        report.headline(
            "new JVM per request / GET /forecast (p50)",
            f"{ratio:,.0f}x",
            report.target("JVM-per-request / HTTP forecast", ratio, TARGET_JVM_RATIO, "x"),
        )
    if "(g)" in rows:
        p50 = rows["(g)"]["p50_ms"]
        report.headline(
            "GET /forecast over HTTP, forecast-table version (p50 / p95 / p99)",
            f"{p50:.1f} / {rows['(g)']['p95_ms']:.1f} / {rows['(g)']['p99_ms']:.1f} ms",
            report.target(
                "GET /forecast p50, table version", p50, TARGET_HTTP_P50_MS, "ms", higher=False
            ),
        )
    for key, label in (
        ("(e)", "POST /predict 1 row over HTTP (p50)"),
        ("(f)", f"POST /predict {BATCH_ROWS:,} rows over HTTP (p50)"),
    ):
        if key in rows:
            report.headline(
                label,
                f"{rows[key]['p50_ms']:.1f} ms ({rows[key]['batch_rows_per_s']:,.0f} rows/s, "
                f"{rows[key]['answered_by']})",
            )
    return report
