"""Sales files in: `generate`, `upload`, and `uploads` (what the upload service holds)."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from salesflow.cli.app import HistoryMode, JsonOption, WideOption, app, settings
from salesflow.cli.output import (
    console,
    count_progress,
    emit,
    print_json,
    print_metrics,
    short_id,
    stamp,
)

__all__ = ["generate", "upload", "uploads"]

#: Statuses the upload service knows, for --status's help.
UPLOAD_STATUSES = "stored, queued, training, trained, failed, rejected"


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
    as_json: JsonOption = False,
) -> None:
    """Generate realistic seasonal sales from a catalogue of stores and products."""
    from salesflow.sales import catalog as catalogue
    from salesflow.sales import generate as gen

    if bool(stores) != bool(products):
        raise typer.BadParameter("--stores and --products go together")
    cat = (
        catalogue.synthetic_catalog(stores, products, seed)
        if stores
        else catalogue.load_catalog(catalog)
    )
    sep = "\t" if delimiter in ("tab", "\\t") else delimiter
    with count_progress("generating", rows) as update:
        stats = gen.generate_sales(
            output,
            rows=rows,
            seed=seed,
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            catalog=cat,
            delimiter=sep,
            timestamps=timestamps,
            progress=update,
        )
    if as_json:
        print_json({"path": str(output), **dataclasses.asdict(stats)})
        return
    console.print(f"wrote {stats.rows:,} sales to {output} ({stats.bytes / 1e6:,.1f} MB)")


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
    mode: Annotated[
        HistoryMode | None,
        typer.Option(
            "--mode",
            help="What the file does to store x days the history holds: replace them, append "
            "to them, or reject the file; default: the job server's history_mode setting.",
        ),
    ] = None,
) -> None:
    """Upload a CSV to the upload service and follow it through queued -> training -> trained."""
    from salesflow.cli.output import err
    from salesflow.clients.followup import follow_upload, upload_with_progress

    cfg = settings()
    chosen = mode.value if mode is not None else None
    record = upload_with_progress(cfg, path, force=force, console=err, mode=chosen)
    if wait:
        record = follow_upload(cfg, record["upload_id"], console=err)
    if as_json:
        print_json(record)
    else:
        _print_upload(record)
        if wait and record.get("job_id"):
            _print_history_change(path.name, str(record["job_id"]))
    if record["status"] in ("failed", "rejected"):
        raise typer.Exit(1)


def _print_history_change(name: str, job_id: str) -> None:
    """What the upload did to the curated history (its job's overlaps), when the job server says."""
    from salesflow.cli.forecasting import print_overlaps
    from salesflow.clients.jobs import JobServerClient
    from salesflow.errors import SalesflowError

    try:
        with JobServerClient(settings()) as client:
            job = client.get_job(job_id)
    except SalesflowError:
        return  # the upload's own status was printed; this is a detail
    for source in job.get("history") or []:
        print_overlaps({**source, "url": name})


def _print_upload(record: dict[str, Any]) -> None:
    console.print(f"upload {record['upload_id']}: [bold]{record['status']}[/]")
    if record.get("preview"):
        print_preview(record["preview"])
    if record.get("model_version"):
        console.print(f"model {record['model_version']}")
    if record.get("metrics"):
        print_metrics(record["metrics"])
    if record.get("error"):
        console.print(f"[red]{record.get('error_code')}[/]: {record['error']}")


def print_preview(preview: dict[str, Any]) -> None:
    """What the upload service's preview found: rows, dates, stores, products, rejects by reason
    with the first line numbers of each (plain lines that fit 80 columns)."""
    checked = "" if preview.get("complete", True) else " (in the first part of the file)"
    console.print(
        f"preview{checked}: {preview.get('rows', 0):,} rows, "
        f"{preview.get('date_min') or '?'} to {preview.get('date_max') or '?'}, "
        f"{preview.get('stores') or 0:,} stores, {preview.get('products') or 0:,} products"
    )
    rejected = preview.get("rejected") or {}
    if not rejected:
        console.print("rejected rows: none")
        return
    console.print(f"rejected rows: {sum(rejected.values()):,}")
    first = preview.get("first_rejected_lines") or {}
    for reason, count in sorted(rejected.items(), key=lambda kv: -kv[1]):
        lines = ", ".join(str(n) for n in (first.get(reason) or [])[:5])
        console.print(f"  {reason}: {count:,}" + (f" (first lines {lines})" if lines else ""))


@app.command()
def uploads(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    status: Annotated[
        str | None, typer.Option(help=f"Only uploads in this state ({UPLOAD_STATUSES}).")
    ] = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Recent uploads and their states, from the upload service."""
    from salesflow.clients.upload import UploadClient

    with UploadClient(settings()) as client:
        records = client.list(limit=limit, status=status)
    emit(
        records,
        [
            ("upload", lambda r: short_id(r.get("upload_id"), wide)),
            ("file", "filename"),
            ("size", lambda r: f"{r['size']:,}" if isinstance(r.get("size"), int) else None),
            ("status", "status"),
            ("created", lambda r: stamp(r.get("created_at"))),
            ("job", lambda r: short_id(r.get("job_id"), wide)),
            ("model", "model_version"),
            ("error", lambda r: r.get("error_code") or r.get("error")),
        ],
        as_json=as_json,
        title="uploads, newest first",
        empty="no uploads yet: run `salesflow upload FILE`",
        compact=("upload", "file", "status", "created", "model", "error"),
        wide=wide,
    )
