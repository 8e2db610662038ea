"""The model competition's scoreboard: every candidate scored on the same backtest rows, one kept.

Candidates are the forest pipelines the backtest refits (salesflow's forest, the original
project's pipeline) and per-series statistical models (`salesflow.spark.statistical`). Each
candidate's forecasts are aligned to the backtest's rows (window, store, product, period); the
leaderboard scores every candidate on the rows where all of them have a forecast (a series that
first sold inside a window has no per-series history to fit, while a forest answers it from its
store and product effects), and the winner is the lowest WAPE there. Numpy only, no Spark.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from salesflow.spark.backtest import Backtest

__all__ = ["Entry", "aligned", "aligned_bounds", "calibrate", "leaderboard", "winner"]

_DIGITS = 4


@dataclass(frozen=True)
class Entry:
    """One candidate's line on the leaderboard (scores on the rows every candidate forecast)."""

    name: str
    kind: str  # "pipeline" (a Spark forest) or "statistical" (per-series, served from a table)
    wape: float | None  # sum |error| / sum |actual|
    mase: float | None  # mean absolute error over the pooled in-sample seasonal-naive MAE
    bias: float | None  # sum (forecast - actual) / sum |actual|: > 0 over-forecasts
    rows: int  # rows compared
    rank: int = 0  # 1 = the winner

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _key(window: np.ndarray, store: np.ndarray, product: np.ndarray, period: np.ndarray) -> Any:
    """Row keys comparable across tables: a structured array of (window, store, product, period)."""
    return np.rec.fromarrays(
        [window.astype(np.int64), store.astype(str), product.astype(str), period.astype(np.int64)]
    )


def _columns(
    bt: Backtest, forecasts: pa.Table, model: str, columns: Sequence[str]
) -> dict[str, np.ndarray]:
    """`columns` of `model`'s rows in `forecasts`, one value per row of `bt` (NaN: none)."""
    chosen = forecasts.filter(pc.equal(forecasts.column("model"), model))
    if chosen.num_rows == 0 or bt.actual.size == 0:
        return {c: np.full(bt.actual.size, np.nan) for c in columns}
    theirs = _key(
        np.asarray(chosen.column("window").to_numpy()),
        np.asarray(chosen.column("store_id").to_pylist(), dtype=object),
        np.asarray(chosen.column("product_id").to_pylist(), dtype=object),
        np.asarray(chosen.column("period_index").to_numpy()),
    )
    order = np.argsort(theirs, kind="stable")
    theirs = theirs[order]
    mine = _key(bt.window, bt.store, bt.product, bt.period)
    at = np.minimum(np.searchsorted(theirs, mine), len(theirs) - 1)
    hit = theirs[at] == mine
    found = {}
    for column in columns:
        values = np.asarray(chosen.column(column).to_numpy(zero_copy_only=False), float)[order]
        found[column] = np.where(hit, values[at], np.nan)
    return found


def aligned(bt: Backtest, forecasts: pa.Table, model: str) -> Backtest:
    """`bt` with `model` column replaced by `model`'s forecasts from `forecasts` (window,
    store_id, product_id, period_index, model, forecast): NaN where that model gave none."""
    return dataclasses.replace(bt, model=_columns(bt, forecasts, model, ["forecast"])["forecast"])


def aligned_bounds(
    bt: Backtest, forecasts: pa.Table, model: str, levels: Sequence[float]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`model`'s own interval bounds (lo_<L>, hi_<L>) on `bt`'s rows, by level ("0.8")."""
    names = {str(level): round(level * 100) for level in levels}
    wanted = [f"{side}_{n}" for n in names.values() for side in ("lo", "hi")]
    found = _columns(bt, forecasts, model, wanted)
    return {key: (found[f"lo_{n}"], found[f"hi_{n}"]) for key, n in names.items()}


def _scale_quantile(ratios: np.ndarray, level: float) -> float | None:
    """The split-conformal quantile of `ratios` at `level`; with too few of them for that
    level, their largest (which then covers less than `level` claims: the coverage says so)."""
    ratios = np.sort(ratios[np.isfinite(ratios)])
    if ratios.size == 0:
        return None
    k = math.ceil((ratios.size + 1) * level - 1e-9)  # 1e-9: float error, as in scoring
    return float(ratios[min(k, ratios.size) - 1])


def calibrate(bt: Backtest, bounds: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Factors that widen (or narrow) a model's own intervals to cover what they claim.

    A row's ratio is |actual - forecast| over the model's own upper half-width (hi - forecast,
    never clipped at zero as the lower one may be); per level the factor is the conformal
    quantile of the ratios over every window, so an interval f +- factor x (hi - f) keeps the
    model's own shape (its scale per series) and the backtest's calibration. Coverage is
    measured on the last window with factors from the earlier windows only (out of sample)."""
    last = int(bt.window.max()) if bt.window.size else 0
    earlier, final = bt.window < last, bt.window == last
    factors: dict[str, float | None] = {}
    covered: dict[str, float | None] = {}
    for level, (_, high) in bounds.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            half = high - bt.model
            ratios = np.where(half > 0, np.abs(bt.actual - bt.model) / half, np.nan)
        factors[level] = _round_or_none(_scale_quantile(ratios, float(level)))
        factor = _scale_quantile(ratios[earlier], float(level)) if last > 0 else None
        rows = final & np.isfinite(half)
        if factor is None or not rows.any():
            covered[level] = None
            continue
        low = np.maximum(bt.model - factor * half, 0.0)
        up = bt.model + factor * half
        inside = (bt.actual >= low) & (bt.actual <= up)
        covered[level] = _round(float(inside[rows].mean()))
    return {
        "factors": factors,
        "coverage_last_window": covered,
        "method": "the winner's own intervals scaled per level by the conformal quantile of "
        "|actual - forecast| / (hi - forecast) on the backtest windows",
        "calibration_rows": int(np.isfinite(bt.model).sum()),
    }


def _round_or_none(value: float | None) -> float | None:
    return None if value is None else _round(value)


def _round(value: float) -> float | None:
    return round(value, _DIGITS) if math.isfinite(value) else None


def _entry(name: str, kind: str, bt: Backtest, rows: np.ndarray) -> Entry:
    actual, forecast = bt.actual[rows], bt.model[rows]
    scale = bt.pooled_scale[rows]
    total = float(np.abs(actual).sum())
    error = forecast - actual
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.abs(error) / scale
        mase = float(np.nanmean(ratios)) if np.isfinite(ratios).any() else math.nan
    return Entry(
        name=name,
        kind=kind,
        wape=_round(float(np.abs(error).sum()) / total) if total else None,
        mase=_round(mase),
        bias=_round(float(error.sum()) / total) if total else None,
        rows=int(rows.sum()),
    )


def leaderboard(candidates: Mapping[str, tuple[str, Backtest]]) -> list[Entry]:
    """Every candidate (name -> (kind, its backtest)) scored on the rows all of them forecast,
    best first; a candidate with no score ranks last."""
    if not candidates:
        return []
    backtests = [bt for _, bt in candidates.values()]
    common = np.logical_and.reduce([np.isfinite(bt.model) for bt in backtests])
    entries = [_entry(name, kind, bt, common) for name, (kind, bt) in candidates.items()]
    order = sorted(
        range(len(entries)),
        key=lambda i: (entries[i].wape is None, entries[i].wape or 0.0, i),
    )
    return [dataclasses.replace(entries[i], rank=r + 1) for r, i in enumerate(order)]


def winner(entries: Sequence[Entry]) -> Entry:
    """The leaderboard's first line."""
    if not entries:
        raise ValueError("an empty leaderboard has no winner")
    return entries[0]
