"""Answers to "how many will store S sell of product P in month M (or on day D)?", from warm
in-process models.

No HTTP and no Spark: `ForecastService` keeps one `serving.Forecaster` per model version, follows
the registry's active pointers (the next request after an activation loads the new version), and
answers each query with a quantity, a prediction interval per level, the basis of the answer
(the model, or a fallback mean for ids the model never saw) and, once per response, the lineage
of the model. What a version says and how a row is answered live in `salesflow.serving.model`.

Months are asked as `YYYY-MM` and answered by the active month model; dates as `YYYY-MM-DD` and
answered by the active day model (`granularity: "day"`). When no day model is active, dates are
answered with their month's forecast from the month model, the response stating
`granularity: "month"` and a note saying how to get day answers (train with granularity day or
both): an answer at the coarser grain, said so, is more useful than an error. A batch is answered
by one model, so with a day model active it is either all dates or all months.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from salesflow.errors import InputError, ModelNotFoundError, TooLargeError
from salesflow.registry import ModelRegistry, normalise_version
from salesflow.serving.model import BASES, ServedModel, horizon_note

__all__ = [
    "MAX_QUERIES",
    "Answer",
    "ForecastBatch",
    "ForecastService",
    "Query",
    "coherence_of",
    "parse_day",
    "parse_period",
]

log = logging.getLogger(__name__)

#: Largest batch of queries one call answers (about 2 MB of JSON out, ~50 ms of work).
MAX_QUERIES = 10_000
#: Model versions kept loaded; each holds a few MB of tree arrays.
CACHE_SIZE = 4
#: Longest store or product id a query may carry (ids in the catalogue are short codes).
MAX_ID_CHARS = 200
#: What the Spark job trims from an id (transforms._BLANKS), so " s1 " asks about "s1".
_BLANKS = " \t\r\n"
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def parse_day(text: str) -> date | None:
    """The date of "YYYY-MM-DD"; None for anything else."""
    match = _DAY.fullmatch(str(text).strip())
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_period(text: str) -> tuple[int, int]:
    """(year, month) of "YYYY-MM", or of the month of a "YYYY-MM-DD" date (month models)."""
    value = str(text).strip()
    if match := _MONTH.fullmatch(value):
        year, month = int(match[1]), int(match[2])
        if 1 <= month <= 12:
            return year, month
    elif match := _DAY.fullmatch(value):
        try:
            day = date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            pass
        else:
            return day.year, day.month
    raise InputError(f"{value[:40]!r} is not a month YYYY-MM or a date YYYY-MM-DD")


def _clean_id(name: str, value: Any) -> str:
    text = value.strip(_BLANKS) if isinstance(value, str) else ""
    if not text:
        raise InputError(f"{name} is missing or blank")
    if len(text) > MAX_ID_CHARS or "\x00" in text:
        raise InputError(f"{name} {text[:40]!r}... is not an id (over {MAX_ID_CHARS} characters)")
    return text


@dataclass(frozen=True)
class Query:
    """One question: a store, a product and a month ("YYYY-MM") or a day ("YYYY-MM-DD")."""

    store_id: str
    product_id: str
    period: str

    @property
    def is_day(self) -> bool:
        """True for a date ("YYYY-MM-DD") question."""
        return parse_day(self.period) is not None

    @classmethod
    def of(
        cls,
        store_id: Any,
        product_id: Any,
        *,
        month: str | None = None,
        date: str | None = None,
    ) -> Query:
        """A validated query from a month or a date (exactly one); InputError says what is wrong."""
        if (month is None) == (date is None):
            raise InputError("give exactly one of month (YYYY-MM) or date (YYYY-MM-DD)")
        year, number = parse_period(month if month is not None else str(date))
        period = f"{year:04d}-{number:02d}"
        if date is not None:
            day = parse_day(str(date))
            if day is None:
                raise InputError(f"date {str(date)[:40]!r} is not YYYY-MM-DD")
            period = day.isoformat()
        return cls(_clean_id("store_id", store_id), _clean_id("product_id", product_id), period)


@dataclass(frozen=True)
class Answer:
    """One forecast: the quantity, its interval per level ([lo, hi], or nulls), basis and flags.

    `clipped`: the prediction or an interval bound was raised to 0 (demand is never negative).
    `predicted_quantity` is None for a period outside a forecast table's horizon (basis
    "outside_horizon"): such periods are not extrapolated.
    """

    store_id: str
    product_id: str
    period: str
    predicted_quantity: float | None
    intervals: dict[str, list[float | None]]
    clipped: bool
    basis: str
    unknown_store: bool
    unknown_product: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "store_id": self.store_id,
            "product_id": self.product_id,
            "period": self.period,
            "predicted_quantity": self.predicted_quantity,
            "intervals": self.intervals,
            "clipped": self.clipped,
            "basis": self.basis,
            "unknown_store": self.unknown_store,
            "unknown_product": self.unknown_product,
        }


@dataclass(frozen=True)
class ForecastBatch:
    """The answers to a batch of queries, with the model's lineage and any notes once."""

    model_version: str
    granularity: str
    answers: list[Answer]
    lineage: dict[str, Any]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "granularity": self.granularity,
            "answers": [a.to_dict() for a in self.answers],
            "lineage": self.lineage,
            "notes": self.notes,
        }


# --- the service -----------------------------------------------------------------------------


def _floats(values: NDArray[np.float64]) -> list[float | None]:
    """The array as Python floats, NaN (no bound) as None."""
    return [None if v != v else v for v in values.tolist()]  # only NaN differs from itself


def _active_name(registry: ModelRegistry, granularity: str = "month") -> str:
    """The active version of a granularity from the registry's pointer file.

    Read on every request (a ~10 us file read); `ModelRegistry.active()` would also parse the
    version's metadata, which can be megabytes of backtest detail.
    """
    name = registry.active_name(granularity)
    if not name:
        if granularity == "month":
            raise ModelNotFoundError("no active model: train one first (upload a sales file)")
        raise ModelNotFoundError(
            f"no active {granularity} model: train one first (granularity {granularity} or both)"
        )
    return name


class ForecastService:
    """Answers forecast queries from cached, in-process models; follows the active pointer."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        history_root: Path | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        """`history_root`: the curated monthly history, for versions without fallback means."""
        self.registry = registry
        self.history_root = history_root
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        #: Seconds each load took, by version: the cost of a hot reload.
        self.load_seconds: dict[str, float] = {}

    def model(self, version: str | None = None, granularity: str = "month") -> ServedModel:
        """A version (default: the active one of `granularity` now), loaded once and kept."""
        name = normalise_version(version) if version else _active_name(self.registry, granularity)
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
        with self._loading:  # one load at a time; a second caller for it waits, then hits
            with self._lock:
                if name in self._cache:
                    return self._cache[name]
            served = ServedModel.load(self.registry.get(name), self.history_root)
            log.info("loaded model %s in %.3f s", name, served.load_seconds)
            with self._lock:
                self.load_seconds[name] = served.load_seconds
                self._cache[name] = served
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return served

    def forecast(self, queries: Sequence[Query], version: str | None = None) -> ForecastBatch:
        """Answer `queries` (at most MAX_QUERIES) with one model version and its lineage."""
        if len(queries) > MAX_QUERIES:
            raise TooLargeError(f"{len(queries)} queries; at most {MAX_QUERIES} per request")
        served = self._model_for(queries, version)
        facts = served.facts
        days = [parse_day(q.period) for q in queries]
        by_day = facts.granularity == "day"
        if by_day and any(d is None for d in days):
            raise InputError(
                f"model {facts.version} is a day model: ask for dates (YYYY-MM-DD), not months"
            )
        periods = [parse_period(q.period) for q in queries]
        stores = [q.store_id for q in queries]
        products = [q.product_id for q in queries]
        scored = served.score(
            stores,
            products,
            [y for y, _ in periods],
            [m for _, m in periods],
            [d for d in days if d is not None] if by_day else None,
        )
        labels = (
            [d.isoformat() for d in days if d is not None]
            if by_day
            else [f"{y:04d}-{m:02d}" for y, m in periods]
        )
        # Plain lists first: indexing numpy arrays element by element is ~10x slower.
        bounds = {
            level: list(
                zip(_floats(scored.lower[level]), _floats(scored.upper[level]), strict=True)
            )
            for level in facts.levels
        }
        columns = zip(
            queries,
            labels,
            _floats(scored.predicted),
            scored.clipped.tolist(),
            scored.basis.tolist(),
            scored.unknown_store.tolist(),
            scored.unknown_product.tolist(),
            strict=True,
        )
        answers = [
            Answer(
                store_id=q.store_id,
                product_id=q.product_id,
                period=label,
                predicted_quantity=predicted,
                intervals={level: list(pairs[i]) for level, pairs in bounds.items()},
                clipped=clipped,
                basis=basis,
                unknown_store=unknown_store,
                unknown_product=unknown_product,
            )
            for i, (q, label, predicted, clipped, basis, unknown_store, unknown_product) in (
                enumerate(columns)
            )
        ]
        notes = list(facts.notes)
        if not by_day and any(d is not None for d in days):
            notes.append(
                "dates answered with their month's forecast from month model "
                f"{facts.version}: no day model is active (train with granularity day or both)"
            )
        if any(a.basis in BASES[1:4] for a in answers):
            notes.append(
                "fallback answers (basis other than 'model') are the product's, store's or "
                "overall mean of that calendar month, with an interval from its spread when "
                f"model {facts.version} records month profiles"
            )
        if facts.table is not None and any(a.basis == "outside_horizon" for a in answers):
            notes.append(horizon_note(facts))
        return ForecastBatch(facts.version, facts.granularity, answers, facts.lineage, notes)

    def _model_for(self, queries: Sequence[Query], version: str | None) -> ServedModel:
        """The model answering a batch: `version`, else the day model for dates when one is
        active, else the month model (see the module docstring)."""
        if version:
            return self.model(version)
        days = sum(q.is_day for q in queries)
        if not days or self.registry.active_name("day") is None:
            return self.model(granularity="month")
        if days != len(queries):
            raise InputError(
                f"{days} of {len(queries)} queries are dates and the rest months: a batch is "
                "answered by one model, so ask dates (day model) and months (month model) apart"
            )
        return self.model(granularity="day")


def coherence_of(registry: ModelRegistry, version: str | None = None) -> dict[str, Any]:
    """A day model's coherence check (default: the active day model's), as its metadata holds it.

    ModelNotFoundError when there is no such version; InputError when it is a month model or a
    day model trained without a month model beside it (granularity `day` instead of `both`).
    """
    found = registry.get(version) if version else registry.require_active("day")
    if found.granularity != "day":
        raise InputError(
            f"model {found.version} is a {found.granularity} model: the coherence check is "
            "recorded with day models"
        )
    block = found.metadata.get("coherence")
    if not isinstance(block, dict):
        raise InputError(
            f"day model {found.version} has no coherence check: it is computed when one run "
            "trains both granularities (granularity both)"
        )
    return {"model_version": found.version, **block}
