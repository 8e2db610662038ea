"""The `salesflow` command line: thin commands over the core and the services' clients."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from salesflow.config import Settings, get_settings
from salesflow.errors import SalesflowError

app = typer.Typer(
    help="salesflow: sales history in, demand forecasts out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List model versions and choose the active one.", invoke_without_command=True
)
serve_app = typer.Typer(help="Run one service in the foreground (what `salesflow up` starts).")
app.add_typer(models_app, name="models")
app.add_typer(serve_app, name="serve")

console = Console()
err = Console(stderr=True)
_state: dict[str, bool] = {"debug": False}


def settings() -> Settings:
    return get_settings()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


# --- generate ----------------------------------------------------------------------------------


@app.command()
def generate(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV file to write.")] = Path(
        "data/sales.csv"
    ),
    rows: Annotated[int, typer.Option(min=1, help="Number of sales rows.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
    start: Annotated[str, typer.Option(help="First date, YYYY-MM-DD.")] = "2018-01-01",
    end: Annotated[str, typer.Option(help="Last date, YYYY-MM-DD.")] = "2022-03-31",
    delimiter: Annotated[str, typer.Option(help="',' ';' or 'tab'.")] = ",",
    catalog: Annotated[
        str | None, typer.Option(help="Catalogue JSON file or mongodb:// URL (default: built-in).")
    ] = None,
    stores: Annotated[
        int, typer.Option(help="Synthesise a catalogue of N stores (with --products).")
    ] = 0,
    products: Annotated[int, typer.Option(help="Synthesise a catalogue of N products.")] = 0,
    timestamps: Annotated[
        bool, typer.Option(help="Write dates as 'YYYY-MM-DD HH:MM:SS' like the original data.")
    ] = False,
) -> None:
    """Generate realistic seasonal sales from a catalogue of stores and products."""
    from salesflow import generate as gen

    if bool(stores) != bool(products):
        raise typer.BadParameter("--stores and --products go together")
    cat = gen.synthetic_catalog(stores, products, seed) if stores else gen.load_catalog(catalog)
    sep = "\t" if delimiter in ("tab", "\\t") else delimiter
    with _progress() as progress:
        task = progress.add_task("generating", total=rows)
        stats = gen.generate_sales(
            output,
            rows=rows,
            seed=seed,
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            catalog=cat,
            delimiter=sep,
            timestamps=timestamps,
            progress=lambda done: progress.update(task, completed=done),
        )
    console.print(f"wrote {stats.rows:,} sales to {output} ({stats.bytes / 1e6:,.1f} MB)")


# --- train / predict / models (in-process Spark) ----------------------------------------------


@app.command()
def train(
    sources: Annotated[list[str], typer.Argument(help="CSV paths or file:// / s3:// URLs.")],
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version active even if the gate says no.")
    ] = False,
) -> None:
    """Train a new model version on the curated history plus these files, in this process.

    It becomes the active version only if its backtest beats the seasonal-naive forecast and the
    active version (or with --force); otherwise it is kept as a candidate.
    """
    from salesflow.registry import ModelRegistry
    from salesflow.spark.session import get_spark
    from salesflow.spark.train import TrainInput
    from salesflow.spark.train import train as run_train

    cfg = settings()
    with err.status("starting Spark") as status:
        spark = get_spark(cfg)
        result = run_train(
            spark,
            cfg,
            [TrainInput(_as_url(s)) for s in sources],
            registry=ModelRegistry(cfg.warehouse_path / "models"),
            progress=lambda stage: status.update(stage),
            force=force,
        )
    console.print(
        f"model [bold]{result.version}[/] trained on {result.rows_read:,} rows "
        f"({result.rows_rejected:,} rejected) in {result.duration_s:.1f} s"
    )
    _print_metrics(result.metrics)
    state = "[green]active[/]" if result.promoted else "[yellow]kept as a candidate[/]"
    console.print(f"{result.version} is {state}: {result.promotion.get('reason', '')}")


@app.command()
def predict(
    source: Annotated[str, typer.Argument(help="CSV of sales (quantity optional).")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: active).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the CSV here.")
    ] = None,
) -> None:
    """Predict quantities for every store/product/month in a CSV, in this process."""
    from salesflow.registry import ModelRegistry
    from salesflow.spark.predict import predict as run_predict
    from salesflow.spark.predict import to_records, write_csv
    from salesflow.spark.session import get_spark

    cfg = settings()
    with err.status("predicting"):
        result = run_predict(
            get_spark(cfg),
            cfg,
            _as_url(source),
            registry=ModelRegistry(cfg.warehouse_path / "models"),
            version=model,
        )
        if output is not None:
            write_csv(result.frame, output)
        records = to_records(result.frame)
    if output is not None:
        console.print(f"wrote {len(records):,} predictions to {output} (model {result.version})")
    else:
        _print_forecast(records, f"predictions of model {result.version}")


# --- forecast / retrain (through the job server) ----------------------------------------------


@app.command()
def forecast(
    store: Annotated[str, typer.Option("--store", help="Store id.")],
    product: Annotated[str, typer.Option("--product", help="Product id.")],
    month: Annotated[str | None, typer.Option("--month", help="Month, YYYY-MM.")] = None,
    day: Annotated[
        str | None, typer.Option("--date", help="A date, YYYY-MM-DD (forecasts its month).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: active).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON answer.")] = False,
) -> None:
    """One forecast from the job server's warm model: quantity, interval, basis, model version."""
    from salesflow.services.jobs.client import JobServerClient

    if (month is None) == (day is None):
        raise typer.BadParameter("give exactly one of --month YYYY-MM or --date YYYY-MM-DD")
    with JobServerClient(settings()) as client:
        answer = client.forecast(store, product, month=month, date=day, model=model)
    if as_json:
        _print_json(answer)
        return
    one = answer["answers"][0]
    bounds = [
        f"{float(level) * 100:g}%: {_fmt(lo, 1)} - {_fmt(hi, 1)}"
        for level, (lo, hi) in one["intervals"].items()
        if lo is not None and hi is not None
    ]
    lineage = answer.get("lineage") or {}
    console.print(
        f"store {one['store_id']}, product {one['product_id']}, {one['period']}: "
        f"[bold]{one['predicted_quantity']:,.1f}[/]"
        + (f"  ({', '.join(bounds)})" if bounds else "  (no interval)")
    )
    console.print(
        f"basis {one['basis']}{' (clipped at 0)' if one['clipped'] else ''}; model "
        f"{answer['model_version']} trained {lineage.get('trained_at') or '?'}"
    )
    for note in answer.get("notes") or []:
        err.print(f"note: {note}")


@app.command()
def retrain(
    upload_id: Annotated[str, typer.Argument(help="The upload to train on again.")],
    wait: Annotated[bool, typer.Option(help="Wait for the new job to finish.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Replay a past upload: a new training job on its stored file, without uploading again."""
    from salesflow.services.jobs.client import JobServerClient

    with JobServerClient(settings()) as client:
        job = client.retrain(upload_id)
        if wait:
            with err.status(f"training job {job['job_id']}"):
                job = client.wait(job["job_id"])
    if as_json:
        _print_json(job)
        return
    console.print(f"job {job['job_id']} ({job.get('job_key')}): [bold]{job['status']}[/]")
    if job.get("model_version"):
        console.print(f"model {job['model_version']}")
    if job.get("metrics"):
        _print_metrics(job["metrics"])
    if job.get("error"):
        console.print(f"[red]{job.get('error_code')}[/]: {job['error']}")
    if job["status"] == "failed":
        raise typer.Exit(1)


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List model versions: holdout metrics, backtest skill, top features; the active one is marked.

    Skill is 1 - WAPE(model) / WAPE(seasonal-naive) over the rolling-origin backtest (above 0:
    better than repeating last year's month).
    """
    if ctx.invoked_subcommand is not None:
        return
    from salesflow.registry import ModelRegistry

    versions = ModelRegistry(settings().warehouse_path / "models").versions()
    if as_json:
        _print_json([{"version": v.version, "active": v.active, **v.metadata} for v in versions])
        return
    table = Table(
        "version", "active", "created", "rows", "WAPE", "baseline WAPE", "RMSE", "skill",
        "top features",
    )  # fmt: skip
    for v in versions:
        m = v.metadata.get("metrics", {})
        importances = v.metadata.get("feature_importances") or {}
        top = sorted(importances.items(), key=lambda kv: -kv[1])[:2]  # two fit the table
        table.add_row(
            v.version,
            "*" if v.active else "",
            str(v.metadata.get("created_at", ""))[:19],
            f"{v.metadata.get('rows_read', 0):,}",
            _fmt(m.get("model", {}).get("wape")),
            _fmt(m.get("baseline", {}).get("wape")),
            _fmt(m.get("model", {}).get("rmse")),
            _fmt((v.metadata.get("backtest") or {}).get("skill")),
            ", ".join(f"{name} {weight:.2f}" for name, weight in top) or "-",
        )
    console.print(table if versions else "no models yet: run `salesflow train FILE`")


@models_app.command("activate")
def models_activate(
    version: Annotated[str, typer.Argument(help="Version to make active, e.g. v0002.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the activation history).")] = "manual",
) -> None:
    """Make a version the active one (rollback or roll forward)."""
    from salesflow.registry import ModelRegistry

    registry = ModelRegistry(settings().warehouse_path / "models")
    registry.activate(version, reason=reason, actor="cli")
    console.print(f"{version} is now active")


# --- services ----------------------------------------------------------------------------------


@app.command()
def broker() -> None:
    """Run the local Kafka-API broker (Tansu, in memory) on the configured bootstrap address."""
    from salesflow.kafka import run_broker

    run_broker(settings())


@serve_app.command("upload")
def serve_upload() -> None:
    """The upload service (HTTP)."""
    from salesflow.services.upload.app import serve

    serve(settings())


@serve_app.command("jobs")
def serve_jobs() -> None:
    """The job server (HTTP, keeps a warm SparkSession)."""
    from salesflow.services.jobs.app import serve

    serve(settings())


@serve_app.command("dashboard")
def serve_dashboard() -> None:
    """The dashboard (HTTP): open the login link `salesflow up` prints."""
    from salesflow.services.dashboard.app import serve

    serve(settings())


@serve_app.command("consumer")
def serve_consumer() -> None:
    """The upload consumer (Kafka consumer group)."""
    from salesflow.services.consumer.worker import run

    run(settings())


@app.command()
def up() -> None:
    """Start everything (broker, job server, upload service, dashboard, consumer) until Ctrl-C."""
    from salesflow.services.dashboard.app import login_url
    from salesflow.supervisor import running_stack

    cfg = settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_stack(cfg, on_ready=lambda c: err.print(f"[green]ready[/] {c.name} {c.url}")):
        console.print(
            f"salesflow is up. Upload with: salesflow upload FILE   (logs: {cfg.data_dir}/logs)"
        )
        # The link carries the token: it goes to this terminal only, never to a log file.
        console.print(f"Dashboard: {login_url(cfg)}", soft_wrap=True, highlight=False)
        console.print("Press Ctrl-C to stop.")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        console.print("stopping...")


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV file to upload.")],
    force: Annotated[
        bool, typer.Option(help="Upload even if the same content was uploaded.")
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="Follow the upload until its model is trained.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final record as JSON.")
    ] = False,
) -> None:
    """Upload a CSV to the upload service and follow it through queued -> training -> trained."""
    from salesflow.followup import follow_upload, upload_with_progress

    cfg = settings()
    record = upload_with_progress(cfg, path, force=force, console=err)
    if wait:
        record = follow_upload(cfg, record["upload_id"], console=err)
    if as_json:
        _print_json(record)
        return
    console.print(f"upload {record['upload_id']}: [bold]{record['status']}[/]")
    if record.get("model_version"):
        console.print(f"model {record['model_version']}")
    if record.get("metrics"):
        _print_metrics(record["metrics"])
    if record.get("error"):
        console.print(f"[red]{record.get('error_code')}[/]: {record['error']}")
    if record["status"] in ("failed", "rejected"):
        raise typer.Exit(1)


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Sales rows to generate.")] = 20_000,
) -> None:
    """The whole flow: start everything, generate, upload, train via Kafka, forecast 12 months, stop."""
    from salesflow.demo import run_demo
    from salesflow.generate import load_catalog

    records, record = run_demo(settings(), rows=rows, console=err)
    catalog = load_catalog(None)
    names = {s.id: s.name for s in catalog.stores} | {p.id: p.name for p in catalog.products}
    _print_forecast_grid(
        records, names, f"12-month forecast (quantity) of model {record.get('model_version')}"
    )
    if record.get("metrics"):
        _print_metrics(record["metrics"])


@app.command("config")
def show_config(
    markdown: Annotated[bool, typer.Option(help="Print the README's configuration table.")] = False,
) -> None:
    """Show every setting with its current value (secrets hidden)."""
    from salesflow.config import settings_table

    if markdown:
        console.print(settings_table(), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("setting", "environment variable", "value")
    for name, value in settings().model_dump().items():
        shown = "***" if "token" in name and value else str(value)
        table.add_row(name, f"SALESFLOW_{name.upper()}", shown)
    console.print(table)


# --- output helpers ----------------------------------------------------------------------------


def _as_url(source: str) -> str:
    if "://" in source:
        return source
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise typer.BadParameter(f"no such file: {source}")
    return path.as_uri()


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_metrics(metrics: dict[str, Any]) -> None:
    table = Table(
        title=f"holdout: last {metrics.get('holdout_months', '?')} months, "
        f"{metrics.get('holdout_rows', '?')} store/product/months"
    )
    table.add_column("")
    for name in ("rmse", "mae", "wape"):
        table.add_column(name.upper(), justify="right")
    for label, key in (("model", "model"), ("seasonal-naive baseline", "baseline")):
        m = metrics.get(key) or {}
        table.add_row(label, *(_fmt(m.get(n)) for n in ("rmse", "mae", "wape")))
    console.print(table)


def _print_forecast(records: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("store_id", "product_id", "period", "predicted_quantity"):
        table.add_column(col, justify="right" if col == "predicted_quantity" else "left")
    for r in records:
        flags = " (unknown)" if r.get("unknown_store") or r.get("unknown_product") else ""
        table.add_row(
            str(r.get("store_id")),
            str(r.get("product_id")),
            str(r.get("period")),
            f"{float(r.get('predicted_quantity') or 0):,.0f}{flags}",
        )
    console.print(table)


def _print_forecast_grid(records: list[dict[str, Any]], names: dict[str, str], title: str) -> None:
    """One row per store/product, one column per month: how a planner reads a forecast."""
    periods = sorted({str(r["period"]) for r in records})
    grid: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        key = (names.get(r["store_id"], r["store_id"]), names.get(r["product_id"], r["product_id"]))
        grid.setdefault(key, {})[str(r["period"])] = float(r.get("predicted_quantity") or 0)
    table = Table(title=title)
    table.add_column("store")
    table.add_column("product")
    for period in periods:
        table.add_column(period, justify="right")
    for (store, product), values in sorted(grid.items()):
        table.add_row(store, product, *(f"{values.get(p, 0):,.0f}" for p in periods))
    console.print(table)


def main() -> None:
    """Entry point: one clear line on error, a traceback only with --debug."""
    try:
        app()
    except SalesflowError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error[/] ({exc.code}): {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
