"""A served model version and the answer rule: its in-process Forecaster and what its metadata says.

`ServedModel` scores rows with the fallback chain and the intervals of `ModelFacts`
(`salesflow.serving.facts`); `salesflow.spark.predict.predict_frame` applies the same rule in
Spark, and a test holds the two equal. No Spark here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from salesflow.errors import ModelError
from salesflow.registry import ModelVersion
from salesflow.serving.facts import (
    DEFAULT_LEVELS,
    LINEAGE_COLUMNS,
    Fallback,
    ModelFacts,
    interval_columns,
    output_columns,
)
from salesflow.serving.forest import Forecaster

__all__ = [
    "BASES",
    "DEFAULT_LEVELS",
    "LINEAGE_COLUMNS",
    "Fallback",
    "ModelFacts",
    "Scored",
    "ServedModel",
    "bound",
    "interval_columns",
    "output_columns",
]

#: Where an answer comes from, best first: the fallback chain for ids the model never saw.
BASES: tuple[str, ...] = ("model", "product_mean", "store_mean", "global_mean")
#: The only inputs a served model may need: they are what a query or a sales row gives (day
#: models also use the day of week and of month, derived from the query's date).
_FEATURES = frozenset({"store_id", "product_id", "year", "month", "day_of_week", "day_of_month"})

Float = NDArray[np.float64]
Bool = NDArray[np.bool_]


# --- scoring ---------------------------------------------------------------------------------


@dataclass
class Scored:
    """Column arrays of scored rows: the answer, its bounds per level (NaN: none), basis, flags."""

    predicted: Float
    basis: NDArray[np.object_]
    lower: dict[str, Float]
    upper: dict[str, Float]
    clipped: Bool
    unknown_store: Bool
    unknown_product: Bool


@dataclass
class ServedModel:
    """One loaded version: its Forecaster, its facts, and how long loading took."""

    forecaster: Forecaster
    facts: ModelFacts
    load_seconds: float

    @classmethod
    def load(cls, model_version: ModelVersion, history_root: Path | None = None) -> ServedModel:
        """Read a version's saved pipeline and metadata; ModelError if it needs other inputs."""
        started = time.perf_counter()
        forecaster = Forecaster.load(model_version.pipeline_path)
        unsupported = set(forecaster.feature_columns) - _FEATURES
        if unsupported:
            raise ModelError(
                f"model {model_version.version} needs columns {sorted(unsupported)}; "
                f"serving supplies only {sorted(_FEATURES)}"
            )
        facts = ModelFacts.of(model_version, history_root)
        return cls(forecaster, facts, round(time.perf_counter() - started, 4))

    @property
    def version(self) -> str:
        """The version's name, e.g. "v0003"."""
        return self.facts.version

    def score(
        self,
        store_ids: Sequence[str | None],
        product_ids: Sequence[str | None],
        years: Sequence[int],
        months: Sequence[int],
        dates: Sequence[date] | None = None,
    ) -> Scored:
        """Answer every row. Equal to `salesflow.spark.predict.predict_frame` on the same rows.

        Day models need `dates` (their year and month must be `years` and `months`): the day of
        week (Spark's dayofweek, 1 = Sunday) and day of month are derived from them.

        Both ids known -> the model (also for a store and product that never sold together:
        the model has seen both and answers from their learned effects, which is history enough).
        Otherwise the fallback chain: a known product -> its mean across all stores (the
        issue's scaling by the store's level would need a known store, i.e. the model case);
        a known store -> its mean across all products; else the global mean. Fallback answers
        get no interval: the widths were calibrated on the model's errors, not on these means.
        """
        fc = self.forecaster
        columns: dict[str, Sequence[Any]] = {
            "store_id": store_ids,
            "product_id": product_ids,
            "year": years,
            "month": months,
        }
        if dates is not None:
            columns["day_of_week"] = [d.isoweekday() % 7 + 1 for d in dates]
            columns["day_of_month"] = [d.day for d in dates]
        raw = fc.predict(columns)
        unknown_store = fc.unknown_mask("store_id", store_ids)
        unknown_product = fc.unknown_mask("product_id", product_ids)
        predicted = np.maximum(raw, 0.0)  # demand is never negative
        model = ~unknown_store & ~unknown_product
        basis = np.full(raw.size, "model", dtype=object)
        fallback = self.facts.fallback
        if fallback is not None:
            product_mean = _lookup(fallback.product_mean, product_ids)
            store_mean = _lookup(fallback.store_mean, store_ids)
            use_product = ~model & ~unknown_product & ~np.isnan(product_mean)
            use_store = ~model & ~use_product & ~unknown_store & ~np.isnan(store_mean)
            use_global = ~model & ~use_product & ~use_store
            basis[use_product], basis[use_store], basis[use_global] = BASES[1:]
            predicted = np.where(use_product, product_mean, predicted)
            predicted = np.where(use_store, store_mean, predicted)
            predicted = np.where(use_global, fallback.global_mean, predicted)
        by_model = basis == "model"
        clipped = by_model & (raw < 0)
        lower, upper = {}, {}
        for level in self.facts.levels:
            width = self.facts.half_widths.get(level)
            if width is None:
                lower[level] = upper[level] = np.full(raw.size, np.nan)
                continue
            low = predicted - width
            clipped |= by_model & (low < 0)
            lower[level] = np.where(by_model, np.maximum(low, 0.0), np.nan)
            upper[level] = np.where(by_model, predicted + width, np.nan)
        return Scored(predicted, basis, lower, upper, clipped, unknown_store, unknown_product)


def _lookup(means: Mapping[str, float], ids: Sequence[str | None]) -> Float:
    """Each id's mean; NaN for an id without one (or a missing id)."""
    get = means.get
    return np.fromiter(
        (math.nan if i is None else get(i, math.nan) for i in ids), np.float64, count=len(ids)
    )


def bound(values: Float, i: int) -> float | None:
    """Element `i` as a float, or None for NaN (no bound)."""
    value = float(values[i])
    return None if math.isnan(value) else value
