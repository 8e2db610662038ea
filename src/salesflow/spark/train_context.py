"""What a training run carries from step to step, and what it returns: typed, not string-keyed.

`TrainRun` is the run's context (session, settings, registry, progress, options, stage timings);
`SourceStats` is one input file's reading (rows, rejects, dates); `TrainResult` is what the run
produced. `salesflow.spark.train` and `salesflow.spark.train_granularity` pass these along.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.ledger import Entry
from salesflow.spark.backtest import FitTransform

__all__ = ["Progress", "SourceStats", "TrainOptions", "TrainResult", "TrainRun", "timed"]

#: Called with a short line of what the run is doing now (the job's live progress).
Progress = Callable[[str], None]


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall time to `timings[stage]` (seconds, rounded to ms)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 3)


@dataclass(frozen=True)
class TrainOptions:
    """How a run publishes: who asks, whether the new version may become (or must be) active.

    `fit_transform` alters every frame a candidate is fitted on (tests only); `history` is the
    curated history the run adds to and trains on (None: <warehouse>/curated)."""

    actor: str = "salesflow.train"
    activate: bool = True
    force: bool = False
    fit_transform: FitTransform | None = None
    history: Path | None = None


@dataclass
class TrainRun:
    """The context every step of one training run shares."""

    spark: SparkSession
    settings: Settings
    registry: ModelRegistry
    say: Progress
    options: TrainOptions
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def timed(self, stage: str) -> Any:
        """A block timed into this run's `timings[stage]`."""
        return timed(self.timings, stage)

    @property
    def curated(self) -> Path:
        """The curated history this run adds to and trains on (its ledger and folders)."""
        return self.options.history or self.settings.warehouse_path / "curated"

    def grain_root(self, grain: str) -> Path:
        """One granularity's folder of the curated history."""
        return self.curated / ("daily" if grain == "day" else "monthly")


@dataclass
class SourceStats:
    """One input file as the run read it (or as the curated history's manifest recorded it)."""

    url: str
    sha256: str
    upload_id: str | None
    rows_read: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    rejects_url: str | None
    rows_aggregated: int
    first_date: str | None
    last_date: str | None
    appended: bool | None = None  # added to the history by this run (False: already there)
    mode: str | None = None  # the history mode it was added under
    overlaps: list[dict[str, Any]] = field(default_factory=list)  # sales.overlap.Overlap dicts

    @classmethod
    def from_entry(cls, entry: Entry, url: str) -> SourceStats:
        """A file already in the curated history, as its ledger entry recorded it."""
        return cls(
            url=url,
            sha256=entry.sha256,
            upload_id=entry.upload_id,
            rows_read=entry.rows_read,
            rows_rejected=entry.rows_rejected,
            rejects_by_reason={},
            rejects_url=None,
            rows_aggregated=entry.rows,
            first_date=entry.first_date,
            last_date=entry.last_date,
            appended=False,
            mode=entry.mode,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    version: str
    metrics: dict[str, Any]
    rows_read: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    rejects_url: str | None
    rows_aggregated: int
    date_range: dict[str, str] | None
    inputs: list[dict[str, Any]]
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)
    promoted: bool = True  # the new version is the active one
    promotion: dict[str, Any] = field(default_factory=dict)  # the gate's record (metadata key)
    granularity: str = "month"
    filled_cells: int | None = None  # day models: days with no sales added as zeros
    coherence: dict[str, Any] | None = None  # day models trained with a month model: the summary
    also: list[dict[str, Any]] = field(default_factory=list)  # `both`: the day run's result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
