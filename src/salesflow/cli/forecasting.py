"""Models: `train` and `predict` in this process; `forecast`, `export` and `retrain` through the job
server (`models` lives in cli/models.py)."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from salesflow.cli.app import HistoryMode, JsonOption, app, settings
from salesflow.cli.output import (
    StageProgress,
    as_url,
    console,
    err,
    fmt,
    print_forecast,
    print_json,
    print_metrics,
)
from salesflow.cli.versions import coherence_line

__all__ = ["ExportFormat", "Granularity", "export", "forecast", "predict", "retrain", "train"]

#: Training stages and the core's progress messages (salesflow.spark.train) that start them.
TRAIN_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start", ()),
    ("read", ("reading",)),
    ("aggregate", ("adding to the curated",)),
    ("backtest", ("backtesting", "evaluating", "filling days")),
    ("fit", ("fitting", "checking the daily")),
    ("save", ("saving",)),
]
#: Prediction stages; the CLI reports them itself around the core's one call.
PREDICT_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start", ()),
    ("predict", ("reading",)),
    ("write", ("writing", "collecting")),
]


class Granularity(StrEnum):
    """What `train --granularity` accepts (Settings.granularity's values)."""

    month = "month"
    day = "day"
    both = "both"


@app.command()
def train(
    sources: Annotated[
        list[str] | None,
        typer.Argument(help="CSV paths or file:// / s3:// URLs (none: the history as it is)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version active even if the gate says no.")
    ] = False,
    granularity: Annotated[
        Granularity | None,
        typer.Option(
            "--granularity",
            help="month totals, day quantities, or both (and check their coherence); "
            "default: the granularity setting.",
        ),
    ] = None,
    mode: Annotated[
        HistoryMode | None,
        typer.Option(
            "--mode",
            help="What the files do to store x days the history holds: replace them, append "
            "to them, or reject the file; default: the history_mode setting.",
        ),
    ] = None,
    only: Annotated[
        bool,
        typer.Option(
            "--only", help="Train on these files alone (their rows add up); history untouched."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a new model version on the curated history plus these files, in this process.

    It becomes the active version of its granularity only if its backtest beats the
    seasonal-naive forecast and the active version (or with --force); otherwise it is kept as a
    candidate. With --granularity both, a month and a day model are trained from one read.
    """
    from salesflow.registry import ModelRegistry
    from salesflow.spark.session import get_spark, input_bytes, input_categories
    from salesflow.spark.train import TrainInput
    from salesflow.spark.train import train as run_train

    cfg = settings()
    if granularity is not None:
        cfg = cfg.model_copy(update={"granularity": granularity.value})
    chosen = mode.value if mode is not None else None
    inputs = [TrainInput(as_url(s), mode=chosen) for s in sources or []]
    urls = [i.url for i in inputs]
    with StageProgress(TRAIN_STAGES) as progress:
        progress("starting Spark")
        result = run_train(
            get_spark(cfg, reads=input_bytes(urls), categories=input_categories(urls)),
            cfg,
            inputs,
            registry=ModelRegistry(cfg.warehouse_path / "models"),
            progress=progress,
            force=force,
            only=only,
        )
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    print_train(dataclasses.asdict(result))


def print_train(result: dict[str, Any]) -> None:
    """A training result (TrainResult.to_dict()) for people: each model trained, its holdout,
    whether it became active, and for day models the zero-filled days and the coherence check."""
    grain = result.get("granularity") or "month"
    console.print(
        f"{grain} model [bold]{result['version']}[/] trained on {result['rows_read']:,} rows "
        f"({result['rows_rejected']:,} rejected) in {result['duration_s']:.1f} s"
    )
    for source in result.get("inputs") or []:
        print_overlaps(source)
    _print_model_outcome(result)
    for other in result.get("also") or []:
        console.print(
            f"{other.get('granularity') or 'day'} model [bold]{other['version']}[/] trained on the "
            f"same rows in {other.get('duration_s') or 0:.1f} s"
        )
        _print_model_outcome(other)


def print_overlaps(source: dict[str, Any]) -> None:
    """What one file did to the history: the earlier uploads' rows it replaced or added to."""
    name = str(source.get("url") or "").rsplit("/", 1)[-1]
    if source.get("appended") is False:
        console.print(f"{name} is in the curated history already: not added again")
    for o in source.get("overlaps") or []:
        console.print(
            f"{name} ({source.get('mode')}) {o['action']} {o['rows']:,} rows of upload "
            f"{o['upload']}: stores {', '.join(o['stores'][:5])}, {o['first_date']} .. "
            f"{o['last_date']}"
        )


def _print_model_outcome(result: dict[str, Any]) -> None:
    """One model's holdout table, day facts, and whether it is active."""
    grain = result.get("granularity") or "month"
    if result.get("metrics"):
        print_metrics(result["metrics"], f"store/product/{grain}s")
    if result.get("filled_cells") is not None:
        console.print(f"{result['filled_cells']:,} store/product/days without sales filled with 0")
    if result.get("coherence"):
        console.print(f"coherence with the month model: {coherence_line(result['coherence'])}")
        console.print(f"  per store/product/month: salesflow models coherence {result['version']}")
    if result.get("promoted") is None:
        return  # a job recorded before promotions: nothing to say
    promotion = result.get("promotion") or {}
    state = (
        f"[green]the active {grain} model[/]"
        if result.get("promoted")
        else "[yellow]kept as a candidate[/]"
    )
    console.print(f"{result['version']} is {state}: {promotion.get('reason', '')}")


@app.command()
def predict(
    source: Annotated[str, typer.Argument(help="CSV of sales (quantity optional).")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: active).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the CSV here.")
    ] = None,
    per_month: Annotated[
        bool,
        typer.Option("--per-month", help="One row per store/product/month, not per input row."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Predict quantities for every row of a CSV (its columns first), in this process."""
    from salesflow.registry import ModelRegistry
    from salesflow.spark.predict import predict as run_predict
    from salesflow.spark.predict import to_records, write_csv
    from salesflow.spark.session import get_spark, input_bytes

    cfg = settings()
    url = as_url(source)
    with StageProgress(PREDICT_STAGES) as progress:
        progress("starting Spark")
        spark = get_spark(cfg, reads=input_bytes([url]))
        progress("reading, aggregating and scoring the sales")
        result = run_predict(
            spark,
            cfg,
            url,
            registry=ModelRegistry(cfg.warehouse_path / "models"),
            version=model,
            per_month=per_month,
        )
        if output is not None:
            progress(f"writing {output}")
            write_csv(result.frame, output)
        progress("collecting the predictions")
        records = to_records(result.frame)
    if result.drops.counts:
        err.print(f"[yellow]rows not scored[/]: {result.drops.summary()}")
    if as_json:
        print_json(records)
    elif output is not None:
        console.print(f"wrote {len(records):,} predictions to {output} (model {result.version})")
    else:
        print_forecast(records, f"predictions of model {result.version}")


@app.command()
def forecast(
    store: Annotated[str, typer.Option("--store", help="Store id or name.")],
    product: Annotated[str, typer.Option("--product", help="Product id or name.")],
    month: Annotated[str | None, typer.Option("--month", help="Month, YYYY-MM.")] = None,
    day: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="A date, YYYY-MM-DD: the day model's forecast (its month's when no day model "
            "is active, said in a note).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: active).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON answer.")] = False,
) -> None:
    """One forecast from the job server's warm model: quantity, interval, basis, granularity and
    model version; notes (e.g. a date answered by the month model) go to stderr."""
    from salesflow.clients.jobs import JobServerClient

    if (month is None) == (day is None):
        raise typer.BadParameter("give exactly one of --month YYYY-MM or --date YYYY-MM-DD")
    with JobServerClient(settings()) as client:
        answer = client.forecast(store, product, month=month, date=day, model=model)
    for kind, found in (answer.get("resolved") or {}).items():
        err.print(f"{kind} {found['name']!r} is id {found['id']}")
    if as_json:
        print_json(answer)
        return
    _print_answer(answer)


class ExportFormat(StrEnum):
    """What `export --format` accepts."""

    csv = "csv"
    parquet = "parquet"


@app.command()
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="Write the file here.")],
    months: Annotated[
        int | None,
        typer.Option(
            "--months",
            min=1,
            max=24,
            help="Horizon in months after the model's last month (default 12, or fewer when "
            "its forecast table holds fewer).",
        ),
    ] = None,
    file_format: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="csv or parquet (default: from the file name's suffix)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model version (default: active).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Forecasts of every store x product series for the next months, with their 80% and 95%
    bounds, basis and model version, from the job server's warm model."""
    from salesflow.clients.jobs import JobServerClient

    chosen = file_format or (
        ExportFormat.parquet if output.suffix.lower() == ".parquet" else ExportFormat.csv
    )
    with JobServerClient(settings()) as client, err.status("exporting forecasts"):
        found = client.export_forecasts(output, months=months, fmt=chosen.value, model=model)
    if as_json:
        print_json(found)
        return
    console.print(
        f"wrote {int(found['rows'] or 0):,} forecasts to {output} (model "
        f"{found['model_version']}, {chosen.value})"
    )


def _print_answer(answer: dict[str, Any]) -> None:
    """A /forecast answer as two lines, its notes on stderr."""
    one = answer["answers"][0]
    bounds = [
        f"{float(level) * 100:g}%: {fmt(lo, 1)} - {fmt(hi, 1)}"
        for level, (lo, hi) in one["intervals"].items()
        if lo is not None and hi is not None
    ]
    lineage = answer.get("lineage") or {}
    grain = answer.get("granularity") or "month"
    predicted = one["predicted_quantity"]  # null: outside the model's forecast horizon
    console.print(
        f"store {one['store_id']}, product {one['product_id']}, {one['period']} ({grain}): "
        + (f"[bold]{predicted:,.1f}[/]" if predicted is not None else "[bold]no forecast[/]")
        + (f"  ({', '.join(bounds)})" if bounds else "  (no interval)")
    )
    console.print(
        f"basis {one['basis']}{' (clipped at 0)' if one['clipped'] else ''}; {grain} model "
        f"{answer['model_version']} trained {lineage.get('trained_at') or '?'}"
    )
    for note in answer.get("notes") or []:
        err.print(f"note: {note}")


@app.command()
def retrain(
    upload_id: Annotated[
        str, typer.Argument(help="The upload to train on again (its id, or a unique prefix).")
    ],
    wait: Annotated[bool, typer.Option(help="Wait for the new job to finish.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Replay a past upload: a new training job on its stored file, without uploading again."""
    from salesflow.cli.ids import upload_id as resolve
    from salesflow.clients.jobs import JobServerClient

    with JobServerClient(settings()) as client:
        job = client.retrain(resolve(upload_id))
        if wait:
            with err.status(f"training job {job['job_id']}"):
                job = client.wait(job["job_id"])
    if as_json:
        print_json(job)
        return
    console.print(f"job {job['job_id']} ({job.get('job_key')}): [bold]{job['status']}[/]")
    if job.get("model_version"):
        console.print(f"{job.get('granularity') or 'month'} model {job['model_version']}")
        _print_model_outcome({**job, "version": job["model_version"]})
    for other in job.get("also") or []:
        console.print(f"{other.get('granularity') or 'day'} model {other['version']}")
        _print_model_outcome(other)
    if job.get("error"):
        console.print(f"[red]{job.get('error_code')}[/]: {job['error']}")
    if job["status"] == "failed":
        raise typer.Exit(1)
