"""The models a training lets compete, and the contest that picks one by backtest WAPE.

Pipeline candidates are MLlib forests refitted at each backtest window like the default one:
`forest` (the settings' regressor, trees and depth, every feature at each split) and `original`
(the original project's pipeline: the same indexers and assembler, a random forest with Spark's
defaults: 20 trees of depth 5, "auto" feature subsets). Every candidate is scored on the same
windows and rows (`salesflow.spark.competition`); the winner's parameters are the version's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from salesflow.config import Settings
from salesflow.spark import backtest, competition
from salesflow.spark.backtest import Backtest, FitTransform, Prepared
from salesflow.spark.competition import Entry
from salesflow.spark.pipeline import HistoryShape, pipeline_parameters

__all__ = ["PIPELINES", "Contest", "contest", "pipeline_candidate"]

#: Candidates that are MLlib pipelines (the rest are per-series statistical models).
PIPELINES = ("forest", "original")
#: The original project's regressor: Spark's RandomForestRegressor defaults.
_ORIGINAL = {
    "regressor": "random_forest",
    "numTrees": 20,
    "maxDepth": 5,
    "featureSubsetStrategy": "auto",
}


def pipeline_candidate(
    name: str, settings: Settings, shape: HistoryShape, granularity: str
) -> dict[str, Any]:
    """The recorded parameters of pipeline candidate `name` for a history of this shape."""
    params = pipeline_parameters(settings, shape.stores, shape.products, granularity)
    if name == "original":
        return {**params, **_ORIGINAL, "candidate": "original"}
    if name == "forest":
        return {**params, "candidate": "forest"}
    raise ValueError(f"{name!r} is not a pipeline candidate; those are {', '.join(PIPELINES)}")


@dataclass(frozen=True)
class Contest:
    """The competition's outcome: the leaderboard, the winner and what the version needs of it."""

    entries: list[Entry]
    winner: Entry
    backtest: Backtest  # the winner's scored backtest rows (summary, holdout, intervals)
    params: dict[str, Any]  # the winner's pipeline parameters (or the forest's, for a table)
    backtests: dict[str, Backtest] = field(default_factory=dict)  # every candidate's, by name

    def to_dict(self) -> dict[str, Any]:
        """What the version's metadata records (key "competition")."""
        return {
            "winner": self.winner.name,
            "kind": self.winner.kind,
            "why": (
                f"lowest backtest WAPE of {len(self.entries)} candidates on the "
                f"{self.winner.rows} rows every candidate forecast"
                if len(self.entries) > 1
                else "the only candidate"
            ),
            "leaderboard": [e.to_dict() for e in self.entries],
        }


def contest(
    settings: Settings,
    prepared: Prepared,
    shape: HistoryShape,
    granularity: str,
    fit_transform: FitTransform | None = None,
) -> Contest:
    """Backtest every configured pipeline candidate on the same windows; keep the best."""
    names: Sequence[str] = [c for c in settings.candidates if c in PIPELINES] or ["forest"]
    params = {n: pipeline_candidate(n, settings, shape, granularity) for n in names}
    scored = {n: backtest.run(prepared, params[n], fit_transform) for n in names}
    entries = competition.leaderboard({n: ("pipeline", scored[n]) for n in names})
    best = competition.winner(entries)
    return Contest(entries, best, scored[best.name], params[best.name], scored)
