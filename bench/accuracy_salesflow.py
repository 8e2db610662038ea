"""Every call the accuracy benchmark makes into `salesflow.*`, in one place.

salesflow's modules are being re-laid out; the benchmark's other modules use only pandas, Spark
and the anchors, so a moved module is fixed here alone.

- `generated_sales`: a file from salesflow's seeded generator (default or synthetic catalogue);
- `salesflow_forecast`: salesflow's default training on the rows before the origin (a fresh
  warehouse, `salesflow.spark.train.train` on the warm session), then the trained version's
  answers and intervals for every held-out cell, exactly as the forecast service serves them
  (`ServedModel.score`: the in-process forest walk, fallbacks, half-width intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bench.common import Context

__all__ = ["SalesflowForecast", "generated_sales", "salesflow_forecast"]


def generated_sales(
    path: Path, rows: int, seed: int, stores: int = 0, products: int = 0, start: date | None = None
) -> Path:
    """`salesflow generate --rows ROWS --seed SEED [--stores S --products P]` into `path`
    (kept if it exists: the generator is seeded); `start` moves the first date from 2018-01-01
    (the last stays the generator's 2022-03-31)."""
    from salesflow.sales.catalog import synthetic_catalog
    from salesflow.sales.generate import generate_sales

    if not path.exists():
        catalog = synthetic_catalog(stores, products, seed) if stores and products else None
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"start": start} if start else {}
        generate_sales(path, rows=rows, seed=seed, catalog=catalog, **extra)
    return path


@dataclass(frozen=True)
class SalesflowForecast:
    """The forecasts (unique_id, ds, yhat, lo_80, hi_80, lo_95, hi_95) and what the training
    said: its version, whether the promotion gate made it active, its own backtest metrics."""

    frame: pd.DataFrame
    version: str
    promoted: bool
    metrics: dict[str, Any]
    winner: str = ""  # the competition's winning candidate


def salesflow_forecast(
    ctx: Context, name: str, train_csv: Path, cells: pd.DataFrame, granularity: str
) -> SalesflowForecast:
    """Train with salesflow's defaults (only `granularity` set) and answer `cells`
    (store_id, product_id, ds) with the trained version, whether or not the gate promoted it."""
    from salesflow.registry import ModelRegistry
    from salesflow.serving.model import ServedModel
    from salesflow.spark.train import TrainInput, train

    settings = ctx.settings(name, granularity=granularity)
    registry = ModelRegistry(settings.warehouse_path / "models")
    result = train(ctx.spark(), settings, [TrainInput(train_csv.as_uri())], registry=registry)
    version = registry.get(result.version)
    served = ServedModel.load(version)
    winner = str((version.metadata.get("competition") or {}).get("winner", ""))
    days = [date(d.year, d.month, d.day) for d in cells["ds"]] if granularity == "day" else None
    scored = served.score(
        cells["store_id"].tolist(),
        cells["product_id"].tolist(),
        cells["ds"].dt.year.tolist(),
        cells["ds"].dt.month.tolist(),
        days,
    )
    frame = pd.DataFrame(
        {
            "unique_id": cells["unique_id"].to_numpy(),
            "ds": cells["ds"].to_numpy(),
            "yhat": np.asarray(scored.predicted, dtype=float),
        }
    )
    for level, lower in scored.lower.items():
        percent = round(float(level) * 100)
        frame[f"lo_{percent}"] = lower
        frame[f"hi_{percent}"] = scored.upper[level]
    return SalesflowForecast(frame, result.version, result.promoted, dict(result.metrics), winner)
