"""Backtest windows: the periods each rolling-origin refit fits on and predicts, and their labels.

N windows of H months end at the last month of history, oldest first; each is fitted on the months
up to its origin and predicts its months. Day models use the same windows, still measured in months
(each window is H calendar months of days, the last one ending at the last day of history).

Pure Python, no Spark: plans and labels are computed and tested without a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: planning windows needs no pyspark import
    from salesflow.spark.pipeline import HistoryShape

__all__ = ["Window", "day_label", "period_label", "plan_windows"]

_EPOCH = date(1970, 1, 1)


def period_label(index: int) -> str:
    """A period index (months since year 0) as "YYYY-MM"."""
    year, month = divmod(index, 12)
    return f"{year:04d}-{month + 1:02d}"


def day_label(index: int) -> str:
    """A day index (days since 1970-01-01) as "YYYY-MM-DD"."""
    return (_EPOCH + timedelta(days=index)).isoformat()


def _day(index: int) -> date:
    return _EPOCH + timedelta(days=index)


def _month_of_day(index: int) -> int:
    day = _day(index)
    return day.year * 12 + day.month - 1


def _first_day_of_month(month_index: int) -> int:
    year, month = divmod(month_index, 12)
    return (date(year, month + 1, 1) - _EPOCH).days


@dataclass(frozen=True)
class Window:
    """One backtest window: fit on periods <= `origin`, predict `months` (period indexes).

    For a day model the periods are days (days since 1970-01-01) spanning whole calendar months.
    """

    origin: int
    months: tuple[int, ...]
    granularity: str = "month"

    def to_dict(self) -> dict[str, Any]:
        if self.granularity != "day":
            return {
                "origin": period_label(self.origin),
                "months": [period_label(m) for m in self.months],
            }
        covered = sorted({_month_of_day(d) for d in self.months})
        return {
            "origin": day_label(self.origin),
            "months": [period_label(m) for m in covered],
            "first": day_label(self.months[0]),
            "last": day_label(self.months[-1]),
        }


def _plan_day_windows(shape: HistoryShape, count: int, horizon: int) -> list[Window]:
    """Windows of `horizon` calendar months of days; the last ends at the last day of history."""
    assert shape.first_index is not None and shape.last_index is not None
    last_month = _month_of_day(shape.last_index)
    windows = []
    for back in range(count - 1, -1, -1):
        end_month = last_month - back * horizon
        first = _first_day_of_month(end_month - horizon + 1)
        last = min(_first_day_of_month(end_month + 1) - 1, shape.last_index)
        if first - 1 >= shape.first_index:
            windows.append(Window(first - 1, tuple(range(first, last + 1)), "day"))
    return windows


def plan_windows(shape: HistoryShape, count: int, horizon: int) -> list[Window]:
    """`count` windows of `horizon` months, the last ending at the last month, oldest first.

    A window whose origin is before the first month has nothing to fit on and is left out. Day
    histories get windows of `horizon` calendar months of days (`_plan_day_windows`).
    """
    if shape.first_index is None or shape.last_index is None:
        return []
    if shape.granularity == "day":
        return _plan_day_windows(shape, count, horizon)
    windows = []
    for back in range(count - 1, -1, -1):
        end = shape.last_index - back * horizon
        origin = end - horizon
        if origin >= shape.first_index:
            windows.append(Window(origin, tuple(range(origin + 1, end + 1))))
    return windows
