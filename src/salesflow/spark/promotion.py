"""The promotion gate: is a new version better than the seasonal-naive forecast and the active one?

Both are measured on the candidate's backtest windows (same history, same rows): the active
version's parameters are refitted there unless that would repeat the candidate's own fits.
`decide_promotion` is the rule, `gate` runs it for a training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from salesflow.config import Settings
from salesflow.registry import ModelVersion
from salesflow.spark import backtest, scoring
from salesflow.spark.candidates import Contest
from salesflow.spark.pipeline import HistoryShape, refit_parameters

__all__ = ["REFIT_KEYS", "active_wape", "decide_promotion", "gate"]

#: Parameters a version must record for the gate to refit it (older metadata may lack some).
REFIT_KEYS = ("regressor", "numTrees", "maxDepth", "maxBins", "featureSubsetStrategy", "seed")


def active_wape(
    active: ModelVersion,
    prepared: backtest.Prepared,
    shape: HistoryShape,
    params: dict[str, Any],
    summary: dict[str, Any],
    sources: list[str],
    *,
    exact: bool,
    contest: Contest | None = None,
) -> tuple[float | None, str]:
    """The active version's overall backtest WAPE on the candidate's windows, and how it was got.

    Its parameters are refitted on the candidate's windows (the same history), so both are
    scored on the same rows. With the same parameters that refit would repeat the candidate's
    own fits exactly (same data, seed and partitions), so it is skipped: the active version's
    recorded backtest is reused when it was made on the same windows of the same history,
    the candidate's scores otherwise. `exact` is False when the candidate's fits were altered.
    An active version served from a forecast table (a statistical winner) has no parameters to
    refit: its model is scored from this run's `contest` when it competed there.
    """
    won = active.metadata.get("competition") or {}
    if won.get("kind") == "statistical":  # a forecast table: no parameters to refit
        name = str(won.get("winner"))
        served = contest.served(name) if contest is not None else None
        if served is None:
            return None, f"{active.version}'s model {name} did not compete in this run"
        wape = scoring.overall(served)["model"]["wape"]
        return wape, f"{active.version}'s model, {name}, scored in this run's contest"
    recorded = active.metadata.get("parameters") or {}
    if any(key not in recorded for key in REFIT_KEYS):
        return None, f"{active.version} records no parameters to refit"
    refit = refit_parameters(recorded, shape.stores, shape.products)
    if exact and refit == params:
        old = active.metadata.get("backtest") or {}
        windows = [w.to_dict() for w in prepared.windows]
        old_windows = [{k: w.get(k) for k in ("origin", "months")} for w in old.get("windows", [])]
        if old_windows == windows and active.metadata.get("training_sources") == sources:
            wape = ((old.get("overall") or {}).get("model") or {}).get("wape")
            return (
                wape,
                f"reused {active.version}'s recorded backtest (same parameters and history)",
            )
        return summary["overall"]["model"]["wape"], (
            f"{active.version} has the same parameters: refitting them here repeats the "
            "candidate's own fits"
        )
    scored = scoring.overall(backtest.run(prepared, refit))
    return scored["model"]["wape"], f"refitted {active.version}'s parameters on these windows"


def _wape(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def decide_promotion(
    candidate_wape: float | None,
    seasonal_naive_wape: float | None,
    *,
    active: str | None,
    active_wape: float | None,
    tolerance: float,
    force: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """The promotion gate on backtest WAPEs (the "promotion" metadata; `promoted` is the verdict).

    A candidate is promoted when it beats the seasonal-naive forecast and is no worse than the
    active version on the same windows (+ `tolerance`). Without a seasonal-naive value there is
    nothing to compare with and it is promoted; without an active version (or one that could not
    be scored, see `note`) only the baseline counts. `force` promotes whatever the gate says
    (`gate_passed` keeps its verdict).
    """
    cand = _wape(candidate_wape)
    if candidate_wape is None or seasonal_naive_wape is None:
        promoted, reason = True, "no baseline to compare (no seasonal-naive value in the backtest)"
    elif candidate_wape >= seasonal_naive_wape:
        promoted = False
        reason = (
            f"backtest WAPE {cand} does not beat the seasonal-naive forecast's "
            f"{_wape(seasonal_naive_wape)}"
        )
    elif active is None or active_wape is None:
        promoted = True
        reason = f"backtest WAPE {cand} beats the seasonal-naive forecast's " + _wape(
            seasonal_naive_wape
        )
        reason += "; no active version to compare with" if active is None else ""
    elif candidate_wape > active_wape + tolerance:
        promoted = False
        reason = (
            f"backtest WAPE {cand} is worse than active {active}'s {_wape(active_wape)} on the "
            f"same windows (tolerance {tolerance:g})"
        )
    else:
        promoted = True
        reason = (
            f"backtest WAPE {cand} beats the seasonal-naive forecast's "
            f"{_wape(seasonal_naive_wape)} and is no worse than active {active}'s "
            f"{_wape(active_wape)} (tolerance {tolerance:g})"
        )
    if note:
        reason += f"; {note}"
    return {
        "promoted": promoted or force,
        "forced": force,
        "gate_passed": promoted,
        "reason": f"forced despite: {reason}" if force and not promoted else reason,
        "compared_with": active if active_wape is not None else None,
        "candidate_wape": candidate_wape,
        "active_wape": active_wape,
        "seasonal_naive_wape": seasonal_naive_wape,
    }


def gate(
    settings: Settings,
    active: ModelVersion | None,
    prepared: backtest.Prepared,
    shape: HistoryShape,
    params: dict[str, Any],
    summary: dict[str, Any],
    sources: list[str],
    *,
    force: bool,
    activate: bool,
    exact: bool,
    say: Callable[[str], None],
    contest: Contest | None = None,
) -> dict[str, Any]:
    """The "promotion" record of a candidate whose backtest `summary` is given.

    With settings.promotion_gate off every candidate is promoted (`gate_passed` keeps the
    verdict); `activate=False` publishes a candidate whatever the gate says; `exact` is False when the
    candidate's fits were altered on purpose (its scores then say nothing about its parameters).
    """
    wape, scored_by = None, ""
    if active is not None:
        say(f"scoring the active version {active.version} on the same windows")
        wape, scored_by = active_wape(
            active, prepared, shape, params, summary, sources, exact=exact, contest=contest
        )
    overall = summary["overall"]
    record = decide_promotion(
        overall["model"]["wape"],
        overall["seasonal_naive"]["wape"],
        active=active.version if active else None,
        active_wape=wape,
        tolerance=settings.promotion_tolerance,
        force=force,
        note=scored_by if active is not None and wape is None else "",
    )
    record["active_scored_by"] = scored_by or None
    if not settings.promotion_gate and not record["promoted"]:
        record["promoted"] = True
        record["reason"] = f"promotion gate off (promotion_gate=false); it said: {record['reason']}"
    if not activate:
        record["promoted"] = False
        record["reason"] = f"published as a candidate on request; gate: {record['reason']}"
    return record
