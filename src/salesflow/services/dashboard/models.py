"""The models view: the job server's model list, completed from the registry's own metadata.

The job server's /models answer carries holdout metrics; the page also shows backtests, intervals,
feature importances, the promotion decision and the activation history. Where the job server does
not send those, they are read (read-only) from the registry folder the dashboard shares with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from salesflow.errors import SalesflowError
from salesflow.registry import ModelRegistry

__all__ = ["EXTRA_KEYS", "complete_models"]

log = logging.getLogger(__name__)

#: Metadata keys the page shows beyond what the job server's /models sends today.
EXTRA_KEYS = (
    "granularity",
    "backtest",
    "intervals",
    "feature_importances",
    "promotion",
    "training_sources",
)
#: Activations shown in the history (newest last).
HISTORY_LIMIT = 200


def _slim(key: str, value: Any) -> Any:
    """Leave out what the page never draws: per-series backtest rows (up to 1,000 of them).

    `series` stays the number of series backtested: the metadata's own count, which the list
    (the best-selling ones only) can fall short of, or the list's length in older metadata.
    """
    if key == "backtest" and isinstance(value, dict) and "per_series" in value:
        rows = value.get("per_series") or []
        value = {k: v for k, v in value.items() if k not in ("per_series", "per_series_note")}
        if not isinstance(value.get("series"), int):  # written before summaries counted them
            value["series"] = len(rows) if isinstance(rows, list) else None
    return value


def complete_models(body: dict[str, Any], root: Path | None) -> dict[str, Any]:
    """`body` (the job server's /models answer) with the extra keys and `history` filled in."""
    models = body.get("models")
    if root is None or not isinstance(models, list):
        return body
    registry = ModelRegistry(root)
    for model in models:
        if not isinstance(model, dict) or not isinstance(model.get("version"), str):
            continue
        try:
            metadata = registry.get(model["version"]).metadata
        except SalesflowError:
            continue  # the job server knows a version this folder does not: show what we have
        except (OSError, ValueError) as exc:
            log.warning("cannot read model %s metadata: %s", model["version"], exc)
            continue
        for key in EXTRA_KEYS:
            if model.get(key) is None and metadata.get(key) is not None:
                model[key] = metadata[key]
            if key in model:
                model[key] = _slim(key, model[key])
    if "history" not in body:
        try:
            body["history"] = registry.history()[-HISTORY_LIMIT:]
        except (OSError, ValueError) as exc:
            log.warning("cannot read the activation history: %s", exc)
    return body
