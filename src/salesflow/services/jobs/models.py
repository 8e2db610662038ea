"""Model versions as the job server's API shows them: no local paths, backtests without their
per-series rows, and the recent activations; what `salesflow models`, the dashboard's models page
and `salesflow status` read."""

from __future__ import annotations

from typing import Any

from salesflow.registry import GRANULARITIES, ModelRegistry, ModelVersion

__all__ = [
    "DETAIL_KEYS",
    "HISTORY_LIMIT",
    "accuracy_view",
    "model_view",
    "models_listing",
    "slim_backtest",
]

#: Metadata keys passed on as recorded (None for a version trained before the key existed).
DETAIL_KEYS = (
    "intervals",
    "feature_importances",
    "promotion",
    "training_sources",
    "competition",
    "forecast_table",
)
#: Activations in a listing, newest last: the page draws them as one table, not an archive.
HISTORY_LIMIT = 200


def slim_backtest(backtest: Any) -> Any:
    """A backtest summary without what no reader draws: the per-series rows (up to 1,000).

    `series` stays the number of series backtested: the summary's own count, which the list (the
    best-selling ones only) can fall short of, or the list's length in older summaries.
    """
    if not isinstance(backtest, dict) or "per_series" not in backtest:
        return backtest
    rows = backtest.get("per_series") or []
    slim = {k: v for k, v in backtest.items() if k not in ("per_series", "per_series_note")}
    if not isinstance(slim.get("series"), int):  # written before summaries counted them
        slim["series"] = len(rows) if isinstance(rows, list) else None
    return slim


def model_view(version: ModelVersion) -> dict[str, Any]:
    """One version: its metrics, data, backtest summary and the details the dashboard shows."""
    meta = version.metadata
    return {
        "version": version.version,
        "granularity": version.granularity,
        "active": version.active,
        "status": "active" if version.active else "candidate",
        "created_at": meta.get("created_at"),
        "metrics": meta.get("metrics"),
        "parameters": meta.get("parameters"),
        "rows_read": meta.get("rows_read"),
        "rows_rejected": meta.get("rows_rejected"),
        "rows_aggregated": meta.get("rows_aggregated"),
        "date_range": meta.get("date_range"),
        # the whole curated history at training time: uploads, rows per store/product/day
        "trained_on": meta.get("trained_on"),
        "stores": len(meta.get("stores") or []),
        "products": len(meta.get("products") or []),
        "inputs": [
            {"upload_id": i.get("upload_id"), "sha256": i.get("sha256")}
            for i in meta.get("inputs") or []
        ],
        "backtest": slim_backtest(meta.get("backtest")),
        **{key: meta.get(key) for key in DETAIL_KEYS},
    }


def models_listing(registry: ModelRegistry) -> dict[str, Any]:
    """Every version newest first, the active one per granularity, the last activations (oldest
    first, as the registry logs them)."""
    active = {g: registry.active_name(g) for g in GRANULARITIES}
    return {
        "active": active["month"],
        "active_by_granularity": active,
        "models": [model_view(v) for v in reversed(registry.versions())],
        "history": registry.history()[-HISTORY_LIMIT:],
    }


def _score(block: Any, key: str) -> float | None:
    value = block.get(key) if isinstance(block, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def accuracy_view(version: ModelVersion) -> dict[str, Any]:
    """A version's backtest scores per store/product (the best-selling series its backtest kept),
    worst WAPE first (series without a WAPE last): WAPE, MASE and RMSE of the model, the
    seasonal-naive WAPE on the same rows and the skill over it."""
    backtest = version.metadata.get("backtest")
    found = backtest.get("per_series") if isinstance(backtest, dict) else None
    rows = []
    for entry in found if isinstance(found, list) else []:
        if not isinstance(entry, dict):
            continue
        model, seasonal = entry.get("model"), entry.get("seasonal_naive")
        wape, baseline = _score(model, "wape"), _score(seasonal, "wape")
        rows.append(
            {
                "store_id": str(entry.get("store_id")),
                "product_id": str(entry.get("product_id")),
                "wape": wape,
                "mase": _score(model, "mase"),
                "rmse": _score(model, "rmse"),
                "seasonal_naive_wape": baseline,
                "skill": None if wape is None or not baseline else round(1 - wape / baseline, 4),
                "rows": entry.get("rows"),
            }
        )
    rows.sort(key=lambda r: (r["wape"] is None, -float(r["wape"] or 0.0)))
    return {
        "model_version": version.version,
        "granularity": version.granularity,
        "series": backtest.get("series") if isinstance(backtest, dict) else None,
        "note": backtest.get("per_series_note") if isinstance(backtest, dict) else None,
        "per_series": rows,
    }
