"""A served model version: its in-process Forecaster, what its metadata says, and the answer rule.

`ModelFacts` reads what answers need from a version's metadata.json (lineage, interval half
widths, fallback means) and degrades gracefully when an older version lacks a key. `ServedModel`
scores rows with the fallback chain and the intervals; `salesflow.spark.predict.predict_frame`
applies the same rule in Spark, and a test holds the two equal. No Spark here.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from salesflow.errors import ModelError
from salesflow.registry import ModelVersion
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

log = logging.getLogger(__name__)

#: Where an answer comes from, best first: the fallback chain for ids the model never saw.
BASES: tuple[str, ...] = ("model", "product_mean", "store_mean", "global_mean")
#: Interval levels shown when a model records none (settings.interval_levels' default).
DEFAULT_LEVELS: tuple[str, ...] = ("0.8", "0.95")
#: Columns that carry the model's identity in every row of a prediction CSV.
LINEAGE_COLUMNS: tuple[str, ...] = ("model_version", "trained_at")
#: The only inputs a served model may need: they are what a query or a sales row gives (day
#: models also use the day of week and of month, derived from the query's date).
_FEATURES = frozenset({"store_id", "product_id", "year", "month", "day_of_week", "day_of_month"})
_SHA256 = re.compile(r"[0-9a-f]{64}")

Float = NDArray[np.float64]
Bool = NDArray[np.bool_]


@dataclass(frozen=True)
class Fallback:
    """Means of the monthly aggregate quantity the model was fitted on, for ids it never saw."""

    global_mean: float
    product_mean: dict[str, float]
    store_mean: dict[str, float]

    @classmethod
    def parse(cls, raw: Any) -> Fallback | None:
        """The metadata's "fallback" block, or None when it is absent or malformed."""
        if not isinstance(raw, Mapping) or not _number(raw.get("global_mean")):
            return None
        means: list[dict[str, float]] = []
        for key in ("product_mean", "store_mean"):
            values = raw.get(key)
            if not isinstance(values, Mapping) or not all(_number(v) for v in values.values()):
                return None
            means.append({str(k): float(v) for k, v in values.items()})
        return cls(float(raw["global_mean"]), *means)

    @classmethod
    def from_history(cls, root: Path, sources: Sequence[str]) -> Fallback | None:
        """The same means computed from the curated partitions the model was fitted on.

        None when any of those partitions is gone: means of part of the history would mislead.
        """
        tables = []
        columns = ["store_id", "product_id", "year", "month", "quantity"]
        for sha256 in sources:
            folder = root / f"source_sha256={sha256}"
            if not _SHA256.fullmatch(sha256) or not folder.is_dir():
                return None
            try:  # pyarrow skips Spark's _SUCCESS, .crc and our _source.json
                tables.append(pq.read_table(folder, columns=columns, partitioning=None))
            except (OSError, pa.ArrowException) as exc:
                log.warning("curated partition %s unreadable: %s", folder, exc)
                return None
        if not tables:
            return None
        monthly = (
            pa.concat_tables(tables)
            .group_by(columns[:4])
            .aggregate([("quantity", "sum")])
            .rename_columns([*columns[:4], "quantity"])
        )
        if monthly.num_rows == 0:
            return None

        def means(key: str) -> dict[str, float]:
            grouped = monthly.group_by(key).aggregate([("quantity", "mean")])
            return dict(
                zip(grouped[key].to_pylist(), grouped["quantity_mean"].to_pylist(), strict=True)
            )

        total = pc.mean(monthly["quantity"]).as_py()
        return cls(float(total), means("product_id"), means("store_id"))


def _number(value: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _half_widths(raw: Any) -> dict[str, float]:
    """level -> half width from the metadata's "intervals" block; {} when absent or malformed."""
    levels = raw.get("levels") if isinstance(raw, Mapping) else None
    if not isinstance(levels, Mapping):
        return {}
    found: dict[str, float] = {}
    for level, spec in levels.items():
        width = spec.get("half_width") if isinstance(spec, Mapping) else None
        try:
            in_range = 0 < float(level) < 1
        except ValueError:
            in_range = False
        if not in_range or not _number(width) or width < 0:
            return {}
        found[str(level)] = float(width)
    return dict(sorted(found.items(), key=lambda kv: float(kv[0])))


def interval_columns(levels: Sequence[str]) -> list[str]:
    """CSV columns of the intervals: lo_80, hi_80, lo_95, hi_95 for levels 0.8 and 0.95."""
    return [f"{side}_{float(level) * 100:g}" for level in levels for side in ("lo", "hi")]


def output_columns(levels: Sequence[str] = DEFAULT_LEVELS, *, lineage: bool = True) -> list[str]:
    """The columns of a prediction, in order (both the Spark and the in-process path)."""
    return [
        "store_id",
        "product_id",
        "year",
        "month",
        "period",
        "predicted_quantity",
        *interval_columns(levels),
        "basis",
        "clipped",
        "actual_quantity",
        "error",
        "unknown_store",
        "unknown_product",
        *(LINEAGE_COLUMNS if lineage else ()),
    ]


@dataclass(frozen=True)
class ModelFacts:
    """What answers need from a version's metadata: lineage, interval widths, fallback means.

    Missing keys (a version trained before they existed) give notes instead of errors: no
    intervals -> null bounds; no fallback means -> the model answers unseen ids (basis "model").
    """

    version: str
    granularity: str
    lineage: dict[str, Any]
    half_widths: dict[str, float]
    levels: tuple[str, ...]
    fallback: Fallback | None
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, model_version: ModelVersion, history_root: Path | None = None) -> ModelFacts:
        """Facts of a version; `history_root` (the curated history) backs missing fallback means."""
        meta, version = model_version.metadata, model_version.version
        notes: list[str] = []
        granularity = str(
            meta.get("granularity") or (meta.get("parameters") or {}).get("granularity") or "month"
        )
        half_widths = _half_widths(meta.get("intervals"))
        if not half_widths:
            notes.append(f"model {version} records no prediction intervals: lo/hi are null")
        sources = list(meta.get("training_sources") or [])
        if not sources:
            sources = sorted({i["sha256"] for i in meta.get("inputs") or [] if i.get("sha256")})
        fallback = Fallback.parse(meta.get("fallback"))
        # The curated history a root holds is monthly: it cannot back a day model's means.
        if fallback is None and history_root is not None and sources and granularity == "month":
            fallback = Fallback.from_history(history_root, sources)
            if fallback is not None:
                notes.append(f"fallback means of model {version} computed from its history")
        if fallback is None:
            notes.append(
                f"model {version} has no fallback means: the model itself answers ids it never "
                "saw (basis 'model', see unknown_store/unknown_product)"
            )
        raw_backtest = meta.get("backtest")
        backtest: Mapping[str, Any] = raw_backtest if isinstance(raw_backtest, Mapping) else {}
        lineage = {
            "model_version": version,
            "trained_at": meta.get("created_at"),
            "training_sources": sources,
            "date_range": meta.get("date_range"),
            "granularity": granularity,
            "metrics": {
                "holdout": meta.get("metrics"),
                "backtest": backtest.get("overall"),
                "skill": backtest.get("skill"),
            },
        }
        raw_coherence = meta.get("coherence")
        if granularity == "day" and isinstance(raw_coherence, Mapping):
            lineage["coherence"] = {
                "month_version": raw_coherence.get("month_version"),
                "summary": raw_coherence.get("summary"),
            }
        levels = tuple(half_widths) or DEFAULT_LEVELS
        return cls(version, granularity, lineage, half_widths, levels, fallback, tuple(notes))


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
