"""The running system: `up`, `serve ...`, `broker`, `demo`, and the looks at it: `status`, `jobs`,
`config`."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from salesflow.cli.app import JsonOption, WideOption, app, serve_app, settings, state
from salesflow.cli.output import (
    console,
    emit,
    err,
    fmt,
    print_forecast_grid,
    print_json,
    short_id,
    stamp,
)
from salesflow.config import Settings
from salesflow.errors import SalesflowError
from salesflow.private import make_private

__all__ = ["jobs", "login", "show_config", "status", "up"]

#: Words in a setting's name (or in a key of a dict setting) whose value is never printed.
_SECRET_WORDS = ("token", "password", "secret")


# --- services ----------------------------------------------------------------------------------


def _private_settings() -> Settings:
    """The settings of a process that writes the system's state: its files private (0600/0700)."""
    cfg = settings()
    make_private(cfg)
    return cfg


@app.command()
def broker() -> None:
    """Run the local Kafka-API broker (Tansu, in memory) on the configured bootstrap address."""
    from salesflow.kafka import run_broker

    run_broker(_private_settings())


@serve_app.command("upload")
def serve_upload() -> None:
    """The upload service (HTTP)."""
    from salesflow.services.upload.app import serve

    serve(_private_settings())


@serve_app.command("jobs")
def serve_jobs() -> None:
    """The job server (HTTP, keeps a warm SparkSession)."""
    from salesflow.services.jobs.app import serve

    serve(_private_settings())


@serve_app.command("dashboard")
def serve_dashboard() -> None:
    """The dashboard (HTTP): open the login link `salesflow up` prints."""
    from salesflow.services.dashboard.app import serve

    serve(_private_settings())


@serve_app.command("consumer")
def serve_consumer() -> None:
    """The upload consumer (Kafka consumer group)."""
    from salesflow.services.consumer.worker import run

    run(_private_settings())


@app.command()
def up() -> None:
    """Start everything (broker, job server, upload service, dashboard, consumer) until Ctrl-C."""
    from salesflow.cli.supervisor import running_stack

    cfg = _private_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_stack(
        cfg, on_ready=lambda c: err.print(f"[green]ready[/] {c.name} {c.url}")
    ) as stack:
        console.print(
            f"salesflow is up. Upload with: salesflow upload FILE   (logs: {cfg.data_dir}/logs)"
        )
        _print_login(cfg)
        console.print("Press Ctrl-C to stop.")
        stack.write_state()
        try:
            while not stop.wait(1.0):  # a child that died is restarted, with a backoff
                stack.heal(say=lambda message: err.print(f"[yellow]{message}[/]"))
        except KeyboardInterrupt:
            pass
        console.print("stopping...")


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Sales rows to generate.")] = 20_000,
    keep_running: Annotated[
        bool, typer.Option(help="Leave everything up at the end, until Ctrl-C (the dashboard too).")
    ] = False,
) -> None:
    """The whole flow: start everything, generate, upload, train via Kafka, forecast 12 months, stop
    (or, with --keep-running, stay up until Ctrl-C)."""
    from salesflow.cli.demo import run_demo

    cfg = settings()

    def hold(records: list[dict[str, Any]], record: dict[str, Any]) -> None:
        _print_demo(records, record)
        _print_login(cfg)
        console.print("Everything stays up; press Ctrl-C to stop.")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()

    records, record = run_demo(cfg, rows=rows, console=err, hold=hold if keep_running else None)
    if keep_running:
        return
    _print_demo(records, record)
    console.print(
        "\nThe demo has stopped its services; the model and the data stay in "
        f"{cfg.data_dir}.\nNext: `make up` (or `salesflow up`) starts everything again and prints "
        "the dashboard's login link (`salesflow login` prints a new one while it runs);\n"
        "`make demo ARGS=--keep-running` leaves the demo up instead.",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def login() -> None:
    """Print a one-time link that logs a browser in to the running dashboard (valid 5 minutes)."""
    _print_login(settings(), strict=True)


def _print_login(cfg: Settings, *, strict: bool = False) -> None:
    """A one-time dashboard link on this terminal only, never in a log file; with `strict`, no
    dashboard is an error, else a warning (the rest of the system works without it)."""
    from salesflow.clients.dashboard import login_link

    try:
        link = login_link(cfg)
    except SalesflowError as exc:
        if strict:
            raise
        err.print(f"[yellow]no dashboard login link[/]: {exc}")
        return
    console.print(f"Dashboard: {link}", soft_wrap=True, highlight=False)
    if "?code=" in link:
        console.print(
            "(the link works once, for a few minutes; `salesflow login` prints a new one)"
        )


def _print_demo(records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    from salesflow.cli.output import print_metrics
    from salesflow.sales.catalog import load_catalog

    catalog = load_catalog(None)
    names = {s.id: s.name for s in catalog.stores} | {p.id: p.name for p in catalog.products}
    print_forecast_grid(
        records, names, f"12-month forecast (quantity) of model {record.get('model_version')}"
    )
    if record.get("metrics"):
        print_metrics(record["metrics"])


# --- looking at it -----------------------------------------------------------------------------


@app.command()
def status(as_json: JsonOption = False, wide: WideOption = False) -> None:
    """Every service, the broker, the upload consumer, the active model; exit code 1 if one is down.

    Required (exit code 1 when down): the upload service, the job server, the broker, and the
    upload consumer (down when the broker reports its group without members). The dashboard and a
    missing model are shown but do not fail; the active model is the job server's (unknown when it
    does not answer). Each probe waits at most a few seconds.
    """
    from salesflow.cli.supervisor import read_restarts
    from salesflow.clients.status import system_status

    if not state["debug"]:  # an unreachable broker is reported below, not as librdkafka noise
        logging.getLogger("salesflow.kafka.librdkafka").setLevel(logging.CRITICAL)
    with err.status("asking every part"):
        answer = system_status(settings())
    answer["restarts"] = read_restarts(settings())  # None unless `salesflow up` runs them
    if as_json:
        print_json(answer)
    else:
        _print_status(answer, wide=wide)
    if not answer["ok"]:
        raise typer.Exit(1)


def status_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The status answer as the table's rows: part, up, required, state, detail, address."""
    from salesflow.clients.status import REQUIRED

    where = answer.get("endpoints") or {}
    rows = [
        {
            "part": s["name"],
            "up": s["ok"],
            "state": s["status"],
            "detail": ", ".join(f"{k}: {v}" for k, v in (s.get("checks") or {}).items()),
            "address": where.get(s["name"], ""),
        }
        for s in answer["services"]
    ]
    broker = answer["broker"]
    reachable = broker["reachable"]
    rows.append(
        {
            "part": "broker",
            "up": reachable,
            "state": "reachable" if reachable else "unreachable",
            "detail": "",
            "address": broker["bootstrap"],
        }
    )
    consumer = answer["consumer"]
    lag = consumer.get("lag")
    running = consumer.get("running")
    rows.append(
        {
            "part": "upload consumer",
            "up": running,
            "state": {True: "running", False: "not running"}.get(running, "unknown"),
            "detail": "lag unknown" if lag is None else f"lag {lag:,} event(s)",
            "address": f"group {consumer['group']} on {consumer['topic']}",
        }
    )
    restarts = answer.get("restarts") or {}
    for row in rows:
        row["required"] = row["part"] in REQUIRED
        if restarts.get(row["part"]):
            row["detail"] = ", ".join(
                filter(None, [row["detail"], f"restarts: {restarts[row['part']]}"])
            )
    return rows


def _print_status(answer: dict[str, Any], *, wide: bool = False) -> None:
    headers = ["part", "up", "state", "detail"] + (["address"] if wide else [])
    table = Table(*headers, title="salesflow status")
    for row in status_rows(answer):
        up = {True: "[green]yes[/]", False: "[red]no[/]"}.get(row["up"], "[yellow]?[/]")
        name = row["part"] + ("" if row["required"] else " (optional)")
        cells = [name, up, row["state"], row["detail"] or "-", row["address"]]
        table.add_row(*cells[: len(headers)])
    console.print(table)
    model = answer.get("active_model")
    if answer.get("models_error"):
        console.print(f"active model: [yellow]unknown[/] ({answer['models_error']})")
    elif model is None:
        console.print("active model: none (upload a sales file to train one)")
    else:
        skill = (model.get("backtest") or {}).get("skill")
        console.print(
            f"active model: [bold]{model['version']}[/], trained "
            f"{stamp(model.get('created_at')) or '?'}; backtest skill {fmt(skill)} "
            f"(vs seasonal-naive), holdout WAPE {fmt(((model.get('metrics') or {}).get('model') or {}).get('wape'))}"
        )
    day = answer.get("active_day_model")
    if day is not None:
        skill = (day.get("backtest") or {}).get("skill")
        console.print(
            f"active day model: [bold]{day['version']}[/], trained "
            f"{stamp(day.get('created_at')) or '?'}; backtest skill {fmt(skill)} (vs seasonal-naive)"
        )
    if answer["down"]:
        console.print(f"[red]down:[/] {', '.join(answer['down'])}")
        if not wide:  # where each was looked for (the address column of --wide)
            where = {row["part"]: row["address"] for row in status_rows(answer)}
            for part in answer["down"]:
                console.print(f"  {part} looked for at {where.get(part) or '?'}")
    else:
        console.print("[green]all required parts are up[/]")


@app.command()
def jobs(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="Only jobs in this state (queued, running, ...).")
    ] = None,
    upload_id: Annotated[
        str | None, typer.Option("--upload", help="Only this upload's (id or unique prefix).")
    ] = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Recent training and prediction jobs, from the job server."""
    from salesflow.cli.ids import upload_id as resolve
    from salesflow.clients.jobs import JobServerClient

    upload = resolve(upload_id) if upload_id else None
    with JobServerClient(settings()) as client:
        records = client.jobs(upload_id=upload, status=status, limit=limit)
    emit(
        records,
        [
            ("job", lambda j: short_id(j.get("job_id"), wide)),
            ("kind", "kind"),
            ("status", "status"),
            ("upload", lambda j: short_id(j.get("upload_id"), wide)),
            ("created", lambda j: stamp(j.get("created_at"))),
            ("seconds", _duration),
            ("granularity", "granularity"),
            ("model", _models_of),
            ("error", lambda j: j.get("error_code") or j.get("error")),
        ],
        as_json=as_json,
        title="jobs, newest first",
        empty="no jobs yet",
        compact=("job", "kind", "status", "upload", "seconds", "model", "error"),
        wide=wide,
    )


def _models_of(job: dict[str, Any]) -> str | None:
    """The job's model version, and the day version a `both` run trained beside it."""
    extra = [f"day {a['version']}" for a in job.get("also") or [] if a.get("version")]
    return ", ".join([v for v in [job.get("model_version")] if v] + extra) or None


def _duration(job: dict[str, Any]) -> str | None:
    try:
        started = datetime.fromisoformat(str(job["started_at"]))
        finished = datetime.fromisoformat(str(job["finished_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return f"{(finished - started).total_seconds():,.1f}"


@app.command("config")
def show_config(
    markdown: Annotated[
        bool, typer.Option(help="Print the configuration table of docs/configuration.md.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show every setting with its current value (secrets hidden)."""
    from salesflow.config import settings_table

    if markdown:
        console.print(settings_table(), markup=False, highlight=False, soft_wrap=True)
        return
    rows = [
        {"setting": name, "variable": f"SALESFLOW_{name.upper()}", "value": _shown(name, value)}
        for name, value in settings().model_dump().items()
    ]
    emit(
        rows,
        [("setting", "setting"), ("environment variable", "variable"), ("value", "value")],
        as_json=as_json,
    )


def _shown(name: str, value: Any) -> Any:
    """A setting's value as printed: secrets as ***, other values as JSON-friendly data."""
    if any(word in name for word in _SECRET_WORDS):
        return "***" if value else value
    if isinstance(value, dict):
        return {k: _shown(k, v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return str(value)
