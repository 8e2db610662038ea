"""`make demo`: the whole service flow on one machine, start to forecast, then everything stops
(or, with `hold`, stays up until Ctrl-C)."""

from __future__ import annotations

import csv
import socket
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from salesflow.cli.supervisor import running_stack
from salesflow.clients.followup import follow_upload, upload_with_progress
from salesflow.config import Settings
from salesflow.errors import ConfigurationError, SalesflowError
from salesflow.sales import generate as gen
from salesflow.sales.catalog import Catalog, load_catalog

__all__ = ["forecast_request", "run_demo"]

DEMO_START, DEMO_END = date(2018, 1, 1), date(2022, 3, 31)


def forecast_request(catalog: Catalog, first: date, months: int, path: Path) -> Path:
    """A prediction CSV (no quantity) for every store x product over `months` months from `first`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["product_id", "product_name", "product_price", "store_id", "store_name", "date"]
        )
        for i in range(months):
            year, month = divmod(first.month - 1 + i, 12)
            day = date(first.year + year, month + 1, 1).isoformat()
            for store in catalog.stores:
                for product in catalog.products:
                    writer.writerow(
                        [product.id, product.name, product.price, store.id, store.name, day]
                    )
    return path


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def _check_ports(settings: Settings) -> None:
    wanted = [
        ("upload service", settings.upload_port),
        ("job server", settings.jobs_port),
        ("dashboard", settings.dashboard_port),
    ]
    if settings.kafka_embedded:
        port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")[2]
        wanted.append(("Kafka broker", int(port)))
    busy = [f"{name} port {port}" for name, port in wanted if not _port_free(settings.host, port)]
    if busy:
        raise ConfigurationError(
            f"already in use: {', '.join(busy)}. Stop what runs there (another `salesflow up`?) "
            "or choose other ports with SALESFLOW_UPLOAD_PORT / SALESFLOW_JOBS_PORT / SALESFLOW_DASHBOARD_PORT / "
            "SALESFLOW_KAFKA_BOOTSTRAP_SERVERS."
        )


Hold = Callable[[list[dict[str, Any]], dict[str, Any]], None]
"""Called with the forecast rows and the upload's record while everything still runs."""


def run_demo(
    settings: Settings, *, rows: int, console: Console, hold: Hold | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start everything, generate, upload, wait for the Kafka-triggered training, forecast 12
    months; `hold` runs before the services stop (e.g. until Ctrl-C)."""
    from salesflow.clients.jobs import JobServerClient

    _check_ports(settings)
    work = settings.data_dir / "demo"
    catalog = load_catalog(None)
    sales = work / f"sales-{rows}.csv"
    if not sales.exists():
        console.print(f"generating {rows:,} sales ({DEMO_START} .. {DEMO_END})")
        gen.generate_sales(
            sales, rows=rows, seed=0, start=DEMO_START, end=DEMO_END, catalog=catalog
        )
    with running_stack(
        settings, on_ready=lambda c: console.print(f"[green]ready[/] {c.name} {c.url}")
    ) as stack:
        record = upload_with_progress(settings, sales, force=False, console=console)
        record = follow_upload(settings, record["upload_id"], console=console)
        if record["status"] != "trained":
            raise SalesflowError(
                f"the upload ended {record['status']}: {record.get('error_code')}: {record.get('error')}"
            )
        first = date(DEMO_END.year + (DEMO_END.month // 12), DEMO_END.month % 12 + 1, 1)
        request = forecast_request(catalog, first, 12, work / "forecast-request.csv")
        console.print(f"forecasting {first:%Y-%m} + 11 months for every store and product")
        with JobServerClient(settings) as jobs:
            answer = jobs.predict_csv(request, accept_json=True, per_month=True)  # the grid
        if stack.failed() is not None:
            console.print(f"[yellow]warning[/]: {stack.failed()} exited during the demo")
        if not isinstance(answer, dict):  # a 202 job or CSV bytes would mean a mis-sized request
            raise SalesflowError("the job server did not answer the forecast request with JSON")
        if hold is not None:
            hold(list(answer["rows"]), record)
    return list(answer["rows"]), record
