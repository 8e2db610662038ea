"""The bulk forecast export: every series of the history for the next N months, from the warm
model, as one CSV or Parquet file (serving.export). Checked before any scoring, written to a
temporary file in bounded chunks, deleted once sent."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from salesflow.errors import BusyError
from salesflow.registry import normalise_version
from salesflow.services.jobs.deps import StateDep
from salesflow.services.jobs.routes import ForecastDep
from salesflow.serving.export import MAX_MONTHS, plan_export, write_export
from salesflow.serving.history import curated_root, series_pairs

__all__ = ["export_router"]

export_router = APIRouter()

_MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@export_router.get("/forecast/export", response_class=FileResponse)
async def export_forecasts(
    state: StateDep,
    forecasts: ForecastDep,
    months: Annotated[
        int | None,
        Query(description=f"Horizon, 1 to {MAX_MONTHS} months (default 12, or a table's fewer)"),
    ] = None,
    format: Literal["csv", "parquet"] = "csv",
    model: str | None = None,
) -> FileResponse:
    """Forecasts of every store x product series for the next `months` months, with their 80%
    and 95% bounds, basis and model version (400 bad_horizon, 413 export_too_large)."""
    version = normalise_version(model) if model else None
    pairs = await run_in_threadpool(series_pairs, curated_root(state.settings.warehouse_path))
    plan = await run_in_threadpool(plan_export, forecasts, pairs, months, version)
    if not state.predict_slots.acquire(blocking=False):
        limit = state.settings.predict_max_concurrent
        raise BusyError(f"{limit} predictions or exports are already running; retry in a moment")
    out = state.settings.data_dir / "predict-outputs" / f"export-{secrets.token_hex(16)}.{format}"
    try:
        await run_in_threadpool(write_export, plan, out, format)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        state.predict_slots.release()
    name = f"forecasts-{plan.served.version}-{plan.periods[0]}-{plan.months}m.{format}"
    return FileResponse(
        out,
        media_type=_MEDIA[format],
        filename=name,
        headers={"X-Model-Version": plan.served.version, "X-Row-Count": str(plan.rows)},
        background=BackgroundTask(out.unlink, missing_ok=True),
    )
