"""What a model version's metadata says for serving: lineage, interval widths, fallback means.

`ModelFacts` reads what answers need from a version's metadata.json and degrades gracefully when an
older version lacks a key (a note instead of an error). Shared by the in-process answer rule
(`salesflow.serving.model`) and the Spark one (`salesflow.spark.answer`). No Spark here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, TypeGuard

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from salesflow.errors import ModelError
from salesflow.registry import ModelVersion
from salesflow.serving.table import TableSpec, level_columns

__all__ = [
    "DEFAULT_LEVELS",
    "LINEAGE_COLUMNS",
    "Fallback",
    "ModelFacts",
    "Profiles",
    "fallback_z",
    "interval_columns",
    "output_columns",
]

log = logging.getLogger(__name__)

#: Interval levels shown when a model records none (settings.interval_levels' default).
DEFAULT_LEVELS: tuple[str, ...] = ("0.8", "0.95")
#: Columns that carry the model's identity in every row of a prediction CSV.
LINEAGE_COLUMNS: tuple[str, ...] = ("model_version", "trained_at")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def fallback_z(level: str) -> float:
    """The normal quantile a fallback answer's interval at `level` ("0.8") spans each side:
    1.2816 for 80%, 1.9600 for 95%. The same float in the in-process and the Spark rule."""
    return NormalDist().inv_cdf(0.5 + float(level) / 2)


#: A month profile: 12 values, January first; NaN where the history had no row in that month.
Profile = tuple[float, ...]


@dataclass(frozen=True)
class Profiles:
    """Per calendar month: the mean quantity and its sample standard deviation, per product,
    per store and overall (metadata keys product_profile / product_spread, store_..., global_...)."""

    product: dict[str, tuple[Profile, Profile]]
    store: dict[str, tuple[Profile, Profile]]
    overall: tuple[Profile, Profile]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Profiles | None:
        """The profiles of a "fallback" block, or None when absent or malformed (versions
        trained before profiles answer with flat means)."""
        overall = _profile_pair(raw.get("global_profile"), raw.get("global_spread"))
        if overall is None:
            return None
        keyed: list[dict[str, tuple[Profile, Profile]]] = []
        for kind in ("product", "store"):
            means, spreads = raw.get(f"{kind}_profile"), raw.get(f"{kind}_spread")
            if not isinstance(means, Mapping) or not isinstance(spreads, Mapping):
                return None
            pairs = {str(k): _profile_pair(v, spreads.get(k)) for k, v in means.items()}
            if any(p is None for p in pairs.values()):
                return None
            keyed.append({k: p for k, p in pairs.items() if p is not None})
        return cls(keyed[0], keyed[1], overall)


def _profile_pair(means: Any, spreads: Any) -> tuple[Profile, Profile] | None:
    """(means, spreads) as two 12-tuples of floats (NaN for null), or None if malformed."""
    out = []
    for values in (means, spreads):
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 12:
            return None
        if not all(v is None or _number(v) for v in values):
            return None
        out.append(tuple(math.nan if v is None else float(v) for v in values))
    return out[0], out[1]


@dataclass(frozen=True)
class Fallback:
    """Means of the (monthly or daily) quantity the model was fitted on, for ids it never saw,
    and, when the version records them, the same per calendar month with their spread."""

    global_mean: float
    product_mean: dict[str, float]
    store_mean: dict[str, float]
    profiles: Profiles | None = None

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
        return cls(float(raw["global_mean"]), means[0], means[1], Profiles.parse(raw))

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
    return [column for level in levels for column in level_columns(level)]


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
    `table`: the version's forecast table (`salesflow.serving.table`), when it answers from one.
    """

    version: str
    granularity: str
    lineage: dict[str, Any]
    half_widths: dict[str, float]
    levels: tuple[str, ...]
    fallback: Fallback | None
    notes: tuple[str, ...] = ()
    table: TableSpec | None = None

    @classmethod
    def of(cls, model_version: ModelVersion, history_root: Path | None = None) -> ModelFacts:
        """Facts of a version; `history_root` (the curated history) backs missing fallback means."""
        meta, version = model_version.metadata, model_version.version
        notes: list[str] = []
        granularity = str(
            meta.get("granularity") or (meta.get("parameters") or {}).get("granularity") or "month"
        )
        table = TableSpec.parse(meta.get("forecast_table"), version)
        half_widths = _half_widths(meta.get("intervals"))
        if not half_widths and table is None:
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
        if fallback is None and table is not None:
            raise ModelError(
                f"model {version} answers from a forecast table but records no fallback means "
                "(metadata 'fallback') and its history is gone: ids outside the table would have "
                "no answer"
            )
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
        if table is not None:
            lineage["forecast_table"] = {
                "model": table.model,
                "horizon": table.horizon(granularity),
            }
        levels = table.levels if table else tuple(half_widths) or DEFAULT_LEVELS
        return cls(
            version, granularity, lineage, half_widths, levels, fallback, tuple(notes), table
        )
