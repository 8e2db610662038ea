"""`salesflow models`: list versions (with their granularity), history, activate, and a day
model's coherence with the month model — all read from the registry in this process."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from salesflow.cli.app import JsonOption, WideOption, models_app, settings
from salesflow.cli.output import console, emit, fmt, print_json, stamp

__all__ = ["models", "models_activate", "models_coherence", "models_history"]


def _registry() -> Any:
    from salesflow.registry import ModelRegistry

    return ModelRegistry(settings().warehouse_path / "models")


def _trained_on(meta: dict[str, Any]) -> tuple[str, str]:
    """Rows and uploads of the whole history a version was trained on (rows per store, product
    and day); versions trained before the history had a ledger show the rows their files had."""
    history = meta.get("trained_on")
    if history is None:
        return f"{meta.get('rows_read', 0):,}", "-"
    return f"{history['rows']:,}", str(history["uploads"])


def _active_by_granularity(registry: Any) -> dict[str, str | None]:
    """The active version of each granularity ({"month": ..., "day": ...}), from the pointers."""
    from salesflow.registry import GRANULARITIES

    return {g: registry.active_name(g) for g in GRANULARITIES}


#: The columns of `salesflow models` without --wide: they fit an 80-column terminal.
_COMPACT = frozenset(
    {"version", "granularity", "active", "model", "holdout WAPE", "backtest skill"}
)


@models_app.callback()
def models(ctx: typer.Context, as_json: JsonOption = False, wide: WideOption = False) -> None:
    """List model versions: granularity, the model that won its competition, holdout WAPE,
    backtest skill (with --wide: rows, the seasonal-naive holdout WAPE, RMSE, top features); the
    active version of each granularity (month, day) is marked.

    Holdout WAPE is the model's error on the last months, held out of its fit. Backtest skill is
    1 - WAPE(model) / WAPE(seasonal-naive) over the rolling-origin backtest (above 0: better than
    repeating last year's month).
    """
    if ctx.invoked_subcommand is not None:
        return
    registry = _registry()
    versions = registry.versions()
    active = _active_by_granularity(registry)
    if as_json:
        print_json(
            [
                {
                    "version": v.version,
                    "active": v.active,
                    **v.metadata,
                    "granularity": v.granularity,
                }
                for v in versions
            ]
        )
        return
    headers = (
        "version", "granularity", "active", "model", "created", "rows", "uploads", "holdout WAPE",
        "naive holdout WAPE", "holdout RMSE", "backtest skill", "top features",
    )  # fmt: skip
    shown = [i for i, h in enumerate(headers) if wide or h in _COMPACT]
    table = Table(
        *(headers[i] for i in shown),
        caption="active: " + ", ".join(f"{g} {v or 'none'}" for g, v in active.items()),
    )
    for v in versions:
        m = v.metadata.get("metrics", {})
        won = v.metadata.get("competition") or {}
        # A forecast table's model has no features: the saved forest's importances are not its.
        importances = (
            {} if won.get("kind") == "statistical" else v.metadata.get("feature_importances")
        )
        top = sorted((importances or {}).items(), key=lambda kv: -kv[1])[:2]  # two fit the table
        cells = (
            v.version,
            v.granularity,
            f"* {v.granularity}" if v.active else "",
            str(won.get("winner") or "forest"),
            stamp(v.metadata.get("created_at")) or "-",
            *_trained_on(v.metadata),
            fmt(m.get("model", {}).get("wape")),
            fmt(m.get("baseline", {}).get("wape")),
            fmt(m.get("model", {}).get("rmse")),
            fmt((v.metadata.get("backtest") or {}).get("skill")),
            ", ".join(f"{name} {weight:.2f}" for name, weight in top) or "-",
        )
        table.add_row(*(cells[i] for i in shown))
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
    """Make a version the active one of its granularity (rollback or roll forward)."""
    found = _registry().activate(version, reason=reason, actor="cli")
    console.print(f"{found.version} is now the active {found.granularity} model")


@models_app.command("coherence")
def models_coherence(
    version: Annotated[
        str, typer.Argument(help="A day model version, or `active` for the active day model.")
    ] = "active",
    as_json: JsonOption = False,
) -> None:
    """How a day model's daily forecasts add up against the month model's, per store/product/month.

    Recorded when one run trains both granularities (`salesflow train --granularity both`): ratio
    is the sum of the day forecasts over a month / the month model's forecast (1 = coherent).
    """
    from salesflow.serving.service import coherence_of

    report = coherence_of(_registry(), None if version == "active" else version)
    if as_json:
        print_json(report)
        return
    summary = report.get("summary") or {}
    console.print(
        f"day model [bold]{report['model_version']}[/] vs month model "
        f"{report.get('month_version') or '?'}, months {', '.join(report.get('months') or [])}"
    )
    console.print(coherence_line(summary))
    emit(
        report.get("rows") or [],
        [
            ("store", "store_id"),
            ("product", "product_id"),
            ("month", "month"),
            ("day sum", lambda r: fmt(r.get("day_sum"), 1)),
            ("month forecast", lambda r: fmt(r.get("month_forecast"), 1)),
            ("ratio", lambda r: fmt(r.get("ratio"))),
            ("abs diff", lambda r: fmt(r.get("abs_diff"), 1)),
        ],
        as_json=False,
        title="day sums vs month forecasts",
        empty="no store/product/month rows",
    )


def coherence_line(summary: dict[str, Any]) -> str:
    """A coherence summary in one line: the totals' ratio, the spread of ratios, the differences."""
    return (
        f"total ratio {fmt(summary.get('total_ratio'))} (day sum {fmt(summary.get('total_day_sum'), 1)}"
        f" / month {fmt(summary.get('total_month_forecast'), 1)}); ratio min "
        f"{fmt(summary.get('ratio_min'))}, median {fmt(summary.get('ratio_median'))}, max "
        f"{fmt(summary.get('ratio_max'))}; mean |diff| {fmt(summary.get('mean_abs_diff'), 1)}, "
        f"max {fmt(summary.get('max_abs_diff'), 1)}"
    )
