"""Models: `train` and `predict` in this process, `forecast` and `retrain` through the job server,
`models` (list, history, activate) from the registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from salesflow.cli.app import JsonOption, app, models_app, settings
from salesflow.cli.output import (
    StageProgress,
    as_url,
    console,
    emit,
    err,
    fmt,
    print_forecast,
    print_json,
    print_metrics,
)

__all__ = ["forecast", "models", "models_activate", "models_history", "predict", "retrain", "train"]

#: Training stages and the core's progress messages (salesflow.spark.train) that start them.
TRAIN_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start", ()),
    ("read", ("reading",)),
    ("aggregate", ("adding to the curated",)),
    ("backtest", ("backtesting", "evaluating")),
    ("fit", ("fitting",)),
    ("save", ("saving",)),
]
#: Prediction stages; the CLI reports them itself around the core's one call.
PREDICT_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start", ()),
    ("predict", ("reading",)),
    ("write", ("writing", "collecting")),
]


@app.command()
def train(
    sources: Annotated[list[str], typer.Argument(help="CSV paths or file:// / s3:// URLs.")],
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version active even if the gate says no.")
    ] = False,
    as_json: JsonOption = False,
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
    inputs = [TrainInput(as_url(s)) for s in sources]
    with StageProgress(TRAIN_STAGES) as progress:
        progress("starting Spark")
        result = run_train(
            get_spark(cfg),
            cfg,
            inputs,
            registry=ModelRegistry(cfg.warehouse_path / "models"),
            progress=progress,
            force=force,
        )
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    console.print(
        f"model [bold]{result.version}[/] trained on {result.rows_read:,} rows "
        f"({result.rows_rejected:,} rejected) in {result.duration_s:.1f} s"
    )
    print_metrics(result.metrics)
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
    as_json: JsonOption = False,
) -> None:
    """Predict quantities for every store/product/month in a CSV, in this process."""
    from salesflow.registry import ModelRegistry
    from salesflow.spark.predict import predict as run_predict
    from salesflow.spark.predict import to_records, write_csv
    from salesflow.spark.session import get_spark

    cfg = settings()
    url = as_url(source)
    with StageProgress(PREDICT_STAGES) as progress:
        progress("starting Spark")
        spark = get_spark(cfg)
        progress("reading, aggregating and scoring the sales")
        result = run_predict(
            spark, cfg, url, registry=ModelRegistry(cfg.warehouse_path / "models"), version=model
        )
        if output is not None:
            progress(f"writing {output}")
            write_csv(result.frame, output)
        progress("collecting the predictions")
        records = to_records(result.frame)
    if as_json:
        print_json(records)
    elif output is not None:
        console.print(f"wrote {len(records):,} predictions to {output} (model {result.version})")
    else:
        print_forecast(records, f"predictions of model {result.version}")


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
        print_json(answer)
        return
    _print_answer(answer)


def _print_answer(answer: dict[str, Any]) -> None:
    """A /forecast answer as two lines, its notes on stderr."""
    one = answer["answers"][0]
    bounds = [
        f"{float(level) * 100:g}%: {fmt(lo, 1)} - {fmt(hi, 1)}"
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
        print_json(job)
        return
    console.print(f"job {job['job_id']} ({job.get('job_key')}): [bold]{job['status']}[/]")
    if job.get("model_version"):
        console.print(f"model {job['model_version']}")
    if job.get("metrics"):
        print_metrics(job["metrics"])
    if job.get("error"):
        console.print(f"[red]{job.get('error_code')}[/]: {job['error']}")
    if job["status"] == "failed":
        raise typer.Exit(1)


# --- models ------------------------------------------------------------------------------------


def _registry() -> Any:
    from salesflow.registry import ModelRegistry

    return ModelRegistry(settings().warehouse_path / "models")


@models_app.callback()
def models(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List model versions: holdout metrics, backtest skill, top features; the active one is marked.

    Skill is 1 - WAPE(model) / WAPE(seasonal-naive) over the rolling-origin backtest (above 0:
    better than repeating last year's month).
    """
    if ctx.invoked_subcommand is not None:
        return
    versions = _registry().versions()
    if as_json:
        print_json([{"version": v.version, "active": v.active, **v.metadata} for v in versions])
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
            fmt(m.get("model", {}).get("wape")),
            fmt(m.get("baseline", {}).get("wape")),
            fmt(m.get("model", {}).get("rmse")),
            fmt((v.metadata.get("backtest") or {}).get("skill")),
            ", ".join(f"{name} {weight:.2f}" for name, weight in top) or "-",
        )
    console.print(table if versions else "no models yet: run `salesflow train FILE`")


@models_app.command("history")
def models_history(as_json: JsonOption = False) -> None:
    """Every activation, oldest first: when, which version, the one before, why, by whom."""
    emit(
        _registry().history(),
        [
            ("at", lambda h: str(h.get("at") or "")[:19]),
            ("version", "version"),
            ("previous", "previous"),
            ("granularity", "granularity"),
            ("actor", "actor"),
            ("reason", "reason"),
        ],
        as_json=as_json,
        title="activations, oldest first",
        empty="no activations yet",
    )


@models_app.command("activate")
def models_activate(
    version: Annotated[str, typer.Argument(help="Version to make active, e.g. v0002.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the activation history).")] = "manual",
) -> None:
    """Make a version the active one (rollback or roll forward)."""
    _registry().activate(version, reason=reason, actor="cli")
    console.print(f"{version} is now active")
