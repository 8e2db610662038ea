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
    fallback_z,
    interval_columns,
    output_columns,
)
from salesflow.serving.forest import Forecaster
from salesflow.serving.table import ForecastTable, day_indexes, month_indexes

__all__ = [
    "BASES",
    "DEFAULT_LEVELS",
    "LINEAGE_COLUMNS",
    "Fallback",
    "ModelFacts",
    "Scored",
    "ServedModel",
    "bound",
    "horizon_note",
    "interval_columns",
    "output_columns",
]

#: Where an answer comes from: the model, the fallback chain for ids it never saw (best first),
#: or no answer for a period outside a forecast table's horizon.
BASES: tuple[str, ...] = (
    "model",
    "product_mean",
    "store_mean",
    "global_mean",
    "outside_horizon",
)
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
    """One loaded version: its Forecaster (a forest version) or its forecast table (a table
    version), its facts, and how long loading took."""

    forecaster: Forecaster | None
    facts: ModelFacts
    load_seconds: float
    table: ForecastTable | None = None

    @classmethod
    def load(cls, model_version: ModelVersion, history_root: Path | None = None) -> ServedModel:
        """Read a version's forecast table, or else its saved pipeline, and its metadata;
        ModelError if the pipeline needs other inputs or the table breaks its contract."""
        started = time.perf_counter()
        facts = ModelFacts.of(model_version, history_root)
        if facts.table is not None:
            path = model_version.path / facts.table.file
            if not path.is_file():
                raise ModelError(f"model {facts.version} names forecast table {path}: missing")
            table = ForecastTable.load(path, facts.table)
            return cls(None, facts, round(time.perf_counter() - started, 4), table)
        forecaster = Forecaster.load(model_version.pipeline_path)
        unsupported = set(forecaster.feature_columns) - _FEATURES
        if unsupported:
            raise ModelError(
                f"model {model_version.version} needs columns {sorted(unsupported)}; "
                f"serving supplies only {sorted(_FEATURES)}"
            )
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

        Day models need `dates` (their year and month must be `years` and `months`).
        A table version answers from its table (`_score_table`), a forest version from its trees.
        """
        if self.table is not None:
            return self._score_table(self.table, store_ids, product_ids, years, months, dates)
        assert self.forecaster is not None  # load gives one or the other
        return self._score_forest(self.forecaster, store_ids, product_ids, years, months, dates)

    def _score_forest(
        self,
        fc: Forecaster,
        store_ids: Sequence[str | None],
        product_ids: Sequence[str | None],
        years: Sequence[int],
        months: Sequence[int],
        dates: Sequence[date] | None,
    ) -> Scored:
        """The forest's answers. A day model's inputs include the day of week (Spark's dayofweek,
        1 = Sunday) and day of month, derived from `dates`.

        Both ids known -> the model (also for a store and product that never sold together:
        the model has seen both and answers from their learned effects, which is history enough).
        Otherwise the fallback chain: a known product -> its mean across all stores (the
        issue's scaling by the store's level would need a known store, i.e. the model case);
        a known store -> its mean across all products; else the global mean; each that calendar
        month's mean when the version records month profiles. A fallback answer's interval is
        that month's mean +- a normal quantile times its spread (`_fallback_bounds`), not the
        model's widths, which were calibrated on the model's errors.
        """
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
        spread = np.full(raw.size, np.nan)
        if self.facts.fallback is not None:
            predicted, spread = _fall_back(
                self.facts.fallback, ~model, predicted, basis, months,
                (store_ids, unknown_store), (product_ids, unknown_product),
            )  # fmt: skip
        by_model = basis == "model"
        clipped = by_model & (raw < 0)
        lower, upper = {}, {}
        for level in self.facts.levels:
            lower[level], upper[level] = _fallback_bounds(predicted, spread, level)
            width = self.facts.half_widths.get(level)
            if width is None:
                continue
            low = predicted - width
            clipped |= by_model & (low < 0)
            lower[level] = np.where(by_model, np.maximum(low, 0.0), lower[level])
            upper[level] = np.where(by_model, predicted + width, upper[level])
        return Scored(predicted, basis, lower, upper, clipped, unknown_store, unknown_product)

    def _score_table(
        self,
        table: ForecastTable,
        store_ids: Sequence[str | None],
        product_ids: Sequence[str | None],
        years: Sequence[int],
        months: Sequence[int],
        dates: Sequence[date] | None,
    ) -> Scored:
        """The table's answers: a row it holds -> its numbers as written (basis "model", never
        clipped: the writer keeps them >= 0); a series it holds but not in that period ->
        basis "outside_horizon", no number and no bounds (never extrapolated); a store and
        product it does not hold together -> the fallback chain, as for the forest."""
        if self.facts.granularity == "day":
            if dates is None:
                raise ModelError(f"model {self.version} is a day model: dates are needed")
            periods = day_indexes(dates)
        else:
            periods = month_indexes(years, months)
        found = table.lookup(store_ids, product_ids, periods)
        basis = np.where(found.found, "model", "outside_horizon").astype(object)
        fallback = self.facts.fallback
        assert fallback is not None  # ModelFacts.of refuses a table version without means
        predicted, spread = _fall_back(
            fallback, ~found.known_series, found.predicted, basis, months,
            (store_ids, ~found.known_store), (product_ids, ~found.known_product),
        )  # fmt: skip
        lower, upper = {}, {}
        for level in self.facts.levels:
            low, high = _fallback_bounds(predicted, spread, level)
            lower[level] = np.where(found.known_series, found.lower[level], low)
            upper[level] = np.where(found.known_series, found.upper[level], high)
        return Scored(
            predicted,
            basis,
            lower,
            upper,
            np.zeros(len(store_ids), dtype=np.bool_),
            ~found.known_store,
            ~found.known_product,
        )


def _fall_back(
    fallback: Fallback,
    needed: Bool,
    predicted: Float,
    basis: NDArray[np.object_],
    months: Sequence[int],
    stores: tuple[Sequence[str | None], Bool],
    products: tuple[Sequence[str | None], Bool],
) -> tuple[Float, Float]:
    """Where `needed`: the product's mean (a known product), else the store's (a known store),
    else the global one; each that calendar month's mean when the version records month
    profiles (with its spread, NaN elsewhere), else the flat mean. Sets `basis` in place;
    returns the new predictions and the spreads."""
    (store_ids, unknown_store), (product_ids, unknown_product) = stores, products
    product_mean = _lookup(fallback.product_mean, product_ids)
    store_mean = _lookup(fallback.store_mean, store_ids)
    use_product = needed & ~unknown_product & ~np.isnan(product_mean)
    use_store = needed & ~use_product & ~unknown_store & ~np.isnan(store_mean)
    use_global = needed & ~use_product & ~use_store
    basis[use_product], basis[use_store], basis[use_global] = BASES[1:4]
    predicted = np.where(use_product, product_mean, predicted)
    predicted = np.where(use_store, store_mean, predicted)
    predicted = np.where(use_global, fallback.global_mean, predicted)
    spread = np.full(predicted.size, np.nan)
    profiles = fallback.profiles
    if profiles is None:
        return predicted, spread
    month = np.asarray(months, dtype=np.int64) - 1
    for use, (mean, sd) in (
        (use_product, _month_values(profiles.product, product_ids, month)),
        (use_store, _month_values(profiles.store, store_ids, month)),
        (use_global, _month_values({"": profiles.overall}, [""] * month.size, month)),
    ):
        hit = use & ~np.isnan(mean)
        predicted = np.where(hit, mean, predicted)
        spread = np.where(hit, sd, spread)
    return predicted, spread


def _month_values(
    by_id: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]],
    ids: Sequence[str | None],
    month: NDArray[np.int64],
) -> tuple[Float, Float]:
    """Each row's month mean and spread from its id's profile (NaN when there is none)."""
    mean = np.full(month.size, np.nan)
    sd = np.full(month.size, np.nan)
    for i, (key, m) in enumerate(zip(ids, month, strict=True)):
        pair = None if key is None else by_id.get(key)
        if pair is not None and 0 <= m < 12:
            mean[i], sd[i] = pair[0][m], pair[1][m]
    return mean, sd


def _fallback_bounds(predicted: Float, spread: Float, level: str) -> tuple[Float, Float]:
    """A fallback answer's bounds: its month mean +- the normal quantile of `level` times the
    month's spread (low clipped at zero); NaN where there is no spread (model rows included)."""
    z = fallback_z(level)
    return np.maximum(predicted - z * spread, 0.0), predicted + z * spread


def _lookup(means: Mapping[str, float], ids: Sequence[str | None]) -> Float:
    """Each id's mean; NaN for an id without one (or a missing id)."""
    get = means.get
    return np.fromiter(
        (math.nan if i is None else get(i, math.nan) for i in ids), np.float64, count=len(ids)
    )


def horizon_note(facts: ModelFacts) -> str:
    """What a table version answers, for responses holding "outside_horizon" rows."""
    assert facts.table is not None
    return (
        f"model {facts.version} answers {facts.table.horizon(facts.granularity)} from its "
        f"forecast table ({facts.table.model}); other periods are not extrapolated (basis "
        "'outside_horizon', predicted_quantity null)"
    )


def bound(values: Float, i: int) -> float | None:
    """Element `i` as a float, or None for NaN (no bound)."""
    value = float(values[i])
    return None if math.isnan(value) else value
