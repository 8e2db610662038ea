"""The numbers behind backtests and the promotion gate, on hand-made arrays (no Spark session):
metrics, split-conformal half-widths and coverage, window plans, the gate's rule, the registry's
compare-and-set activation, and `salesflow models` showing skill and top features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from typer.testing import CliRunner

from salesflow import cli
from salesflow.config import Settings, get_settings
from salesflow.registry import ModelRegistry
from salesflow.spark.backtest import Backtest
from salesflow.spark.pipeline import HistoryShape
from salesflow.spark.promotion import decide_promotion, gate
from salesflow.spark.scoring import (
    conformal_half_width,
    holdout_metrics,
    intervals,
    scores,
    skill,
    summary,
)
from salesflow.spark.windows import Window, plan_windows

JAN_2021 = 2021 * 12  # period index of 2021-01


def test_scores_by_hand() -> None:
    actual = np.array([10.0, 20.0, 30.0, 0.0])
    forecast = np.array([12.0, 17.0, 30.0, 1.0])  # errors 2, 3, 0, 1
    found = scores(actual, forecast, np.full(4, 2.0))
    assert found == {
        "rmse": round(math.sqrt((4 + 9 + 0 + 1) / 4), 4),
        "mae": 1.5,
        "wape": round(6 / 60, 4),
        "mase": 0.75,  # mean |e| / 2
    }
    undefined_scale = scores(actual, forecast, np.array([2.0, 2.0, np.nan, 2.0]))
    assert undefined_scale["mase"] is None and undefined_scale["mae"] == 1.5
    assert scores(np.zeros(2), np.ones(2), np.ones(2))["wape"] is None  # sum |y| = 0
    assert scores(np.zeros(0), np.zeros(0), np.zeros(0))["rmse"] is None
    assert skill(0.15, 0.2) == 0.25 and skill(None, 0.2) is None and skill(0.1, 0.0) is None


def test_conformal_half_width_is_the_ceil_n_plus_1_level_order_statistic() -> None:
    residuals = np.arange(1.0, 11.0)  # |r| = 1..10, n = 10
    assert conformal_half_width(residuals, 0.8) == 9.0  # ceil(11 * 0.8) = 9th smallest
    assert conformal_half_width(-residuals, 0.5) == 6.0  # absolute values; ceil(5.5) = 6
    assert conformal_half_width(residuals, 0.95) is None  # ceil(10.45) = 11 > n: unbounded
    # (99 + 1) * 0.8 is 80.00000000000001 in floating point; the 80th value, not the 81st.
    assert conformal_half_width(np.arange(1.0, 100.0), 0.8) == 80.0
    assert conformal_half_width(np.zeros(0), 0.8) is None


def test_windows_end_at_the_last_month_and_need_something_to_fit() -> None:
    shape = HistoryShape(
        rows=1, stores=1, products=1, first_index=JAN_2021, last_index=JAN_2021 + 11
    )
    windows = plan_windows(shape, count=3, horizon=3)
    assert [w.to_dict() for w in windows] == [
        {"origin": "2021-03", "months": ["2021-04", "2021-05", "2021-06"]},
        {"origin": "2021-06", "months": ["2021-07", "2021-08", "2021-09"]},
        {"origin": "2021-09", "months": ["2021-10", "2021-11", "2021-12"]},
    ]
    short = HistoryShape(
        rows=1, stores=1, products=1, first_index=JAN_2021, last_index=JAN_2021 + 4
    )
    assert [w.origin for w in plan_windows(short, count=3, horizon=3)] == [JAN_2021 + 1]
    assert plan_windows(HistoryShape(0, 0, 0, None, None), count=3, horizon=3) == []


def _backtest(rows: list[tuple[int, str, float, float, float, float]], windows: int) -> Backtest:
    """(window, product, actual, model, naive, seasonal) rows of store s1; every scale 1."""
    w, product, actual, model, naive, seasonal = (np.array(c) for c in zip(*rows, strict=True))
    n = len(rows)
    return Backtest(
        windows=[Window(JAN_2021 + 3 * i, (JAN_2021 + 3 * i + 1,)) for i in range(windows)],
        window=w.astype(int),
        store=np.array(["s1"] * n, dtype=object),
        product=product.astype(object),
        period=np.zeros(n, dtype=int),
        actual=actual.astype(float),
        model=model.astype(float),
        naive=naive.astype(float),
        seasonal=seasonal.astype(float),
        series_scale=np.ones(n),
        pooled_scale=np.ones(n),
    )


def test_summary_compares_the_three_forecasts_on_the_same_rows() -> None:
    nan = float("nan")
    bt = _backtest(
        [
            (0, "p1", 10, 11, 8, 12),
            (0, "p2", 10, 11, 9, nan),  # no seasonal-naive value: counted, not scored
            (1, "p1", 20, 18, 10, 20),
            (1, "p2", 4, 5, 4, 6),
        ],
        windows=2,
    )
    found = summary(bt, horizon=1)
    assert [(w["rows"], w["rows_total"]) for w in found["windows"]] == [(1, 2), (2, 2)]
    assert (found["rows"], found["rows_total"]) == (3, 4)
    overall = found["overall"]
    assert overall["model"]["wape"] == round((1 + 2 + 1) / 34, 4)
    assert overall["naive"]["wape"] == round((2 + 10 + 0) / 34, 4)
    assert overall["seasonal_naive"]["wape"] == round((2 + 0 + 2) / 34, 4)
    assert found["skill"] == 0.0  # equal WAPEs
    assert [(s["product_id"], s["rows"]) for s in found["per_series"]] == [("p1", 2), ("p2", 1)]
    assert found["per_series"][1]["model"]["mae"] == 1.0
    assert holdout_metrics(bt, months=1, horizon=1) == {
        "model": {"rmse": 1.5811, "mae": 1.5, "wape": round(3 / 24, 4)},
        "baseline": {"rmse": 1.4142, "mae": 1.0, "wape": round(2 / 24, 4)},
        "holdout_months": 1,
        "holdout_rows": 2,
        "holdout_rows_total": 2,
        "method": "rolling origin: the last 1 backtest windows",
    }
    assert holdout_metrics(bt, months=3, horizon=1) is None  # more months than the windows hold


def test_intervals_calibrate_on_earlier_windows_and_measure_the_last() -> None:
    # Window 0 and 1 residuals |r| = 1..10; window 2 residuals 0.5, 5, 9.5, 20.
    earlier = [(i % 2, "p1", 100.0, 100.0 + r, 1.0, 1.0) for i, r in enumerate(range(1, 11))]
    last = [(2, "p1", 100.0, 100.0 - r, 1.0, 1.0) for r in (0.5, 5.0, 9.5, 20.0)]
    found = intervals(_backtest(earlier + last, windows=3), [0.8, 0.5])
    # q(0.8) on the 10 earlier residuals is the 9th smallest = 9: covers 0.5 and 5, not 9.5 or 20.
    assert found["coverage_last_window"] == {"0.8": 0.5, "0.5": 0.5}
    # The saved q uses all 14 residuals (0.5, 1..10, 5, 9.5, 20): the ceil(15 * 0.8) = 12th
    # smallest is 9.5, the ceil(15 * 0.5) = 8th is 6.
    assert found["levels"] == {"0.8": {"half_width": 9.5}, "0.5": {"half_width": 6.0}}
    assert (found["calibration_rows"], found["coverage_rows"]) == (14, 4)


def test_gate_rules() -> None:
    first = decide_promotion(0.2, 0.3, active=None, active_wape=None, tolerance=0.0)
    assert first["promoted"] and first["compared_with"] is None
    assert "no active version" in first["reason"]
    worse_than_baseline = decide_promotion(0.3, 0.3, active=None, active_wape=None, tolerance=0.0)
    assert not worse_than_baseline["promoted"] and "does not beat" in worse_than_baseline["reason"]
    no_baseline = decide_promotion(None, None, active="v0001", active_wape=None, tolerance=0.0)
    assert no_baseline["promoted"] and no_baseline["reason"].startswith("no baseline to compare")
    kw: dict[str, Any] = {"active": "v0001", "active_wape": 0.2}
    worse = decide_promotion(0.21, 0.3, tolerance=0.0, **kw)
    assert not worse["promoted"] and worse["compared_with"] == "v0001"
    assert "worse than active v0001's 0.2000" in worse["reason"]
    assert decide_promotion(0.21, 0.3, tolerance=0.01, **kw)["promoted"]  # within tolerance
    assert decide_promotion(0.2, 0.3, tolerance=0.0, **kw)["promoted"]  # ties are no worse
    forced = decide_promotion(0.21, 0.3, tolerance=0.0, force=True, **kw)
    assert forced["promoted"] and forced["forced"] and not forced["gate_passed"]
    assert forced["reason"].startswith("forced despite: backtest WAPE 0.2100 is worse")
    unscored = decide_promotion(0.2, 0.3, active="v0001", active_wape=None, tolerance=0.0)
    assert unscored["promoted"] and unscored["compared_with"] is None


def test_with_the_gate_off_every_version_is_promoted_and_the_verdict_kept(tmp_path: Path) -> None:
    worse = {"overall": {"model": {"wape": 0.4}, "seasonal_naive": {"wape": 0.3}}}
    unused = cast(Any, None)  # without an active version nothing is refitted

    def record(*, gate_on: bool, activate: bool = True) -> dict[str, Any]:
        cfg = Settings(data_dir=tmp_path, _env_file=None, promotion_gate=gate_on)
        args: tuple[Any, ...] = (cfg, None, unused, unused, {}, worse, [])
        return gate(*args, force=False, activate=activate, exact=True, say=lambda _: None)

    gated = record(gate_on=True)
    assert not gated["promoted"] and not gated["gate_passed"]
    off = record(gate_on=False)
    assert off["promoted"] and not off["gate_passed"]
    assert off["reason"] == f"promotion gate off (promotion_gate=false); it said: {gated['reason']}"
    kept = record(gate_on=False, activate=False)  # activate=False always publishes a candidate
    assert not kept["promoted"]
    assert kept["reason"] == f"published as a candidate on request; gate: {off['reason']}"


def _publish(registry: ModelRegistry, meta: dict[str, Any], **kwargs: Any) -> str:
    with registry.staging() as staged:
        (staged / "pipeline").mkdir()
        return registry.publish(staged, meta, reason="test", actor="t", **kwargs).version


def test_publish_activates_only_if_the_active_version_is_still_the_compared_one(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert _publish(registry, {}, activate=True, expected_active=None) == "v0001"
    promotion = {"promoted": True, "reason": "better"}
    # v0002 was compared with "no active version", but v0001 became active meanwhile.
    stale = _publish(registry, {"promotion": promotion}, activate=True, expected_active=None)
    meta = registry.get(stale).metadata
    assert registry.require_active().version == "v0001" and meta["status"] == "candidate"
    assert meta["promotion"]["promoted"] is False
    assert meta["promotion"]["reason"].startswith("not activated: the active version changed")
    assert meta["activation_refused"] == meta["promotion"]["reason"]
    fresh = _publish(registry, {"promotion": promotion}, activate=True, expected_active="v0001")
    assert registry.require_active().version == fresh == "v0003"
    assert registry.get(fresh).metadata["promotion"] == promotion
    assert [h["version"] for h in registry.history()] == ["v0001", "v0003"]


@pytest.fixture
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the CLI's settings at a temp data folder (no stray .env file)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SALESFLOW_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_models_lists_skill_and_top_features(cli_data_dir: Path) -> None:
    registry = ModelRegistry(cli_data_dir / "warehouse" / "models")
    importances = {"month": 0.55, "year": 0.01, "store": 0.24, "product": 0.2}
    _publish(
        registry, {"backtest": {"skill": 0.0478}, "feature_importances": importances}, activate=True
    )
    _publish(registry, {"rows_read": 5}, activate=False)  # a version from before backtests
    result = CliRunner().invoke(cli.app, ["models", "--wide"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "v000" in line]
    assert "0.048" in lines[0] and "month 0.55, store 0.24" in lines[0]
    assert "product" not in lines[0]  # only the top two
    assert lines[1].rstrip(" │|").endswith("-")
    assert "forest" in lines[0]  # a version from before the competition: the forest


def test_models_names_a_statistical_winner_and_no_forest_features(cli_data_dir: Path) -> None:
    registry = ModelRegistry(cli_data_dir / "warehouse" / "models")
    _publish(
        registry,
        {
            "competition": {"winner": "AutoETS", "kind": "statistical"},
            "feature_importances": {"month": 0.7, "year": 0.1, "store": 0.1, "product": 0.1},
        },
        activate=True,
    )
    result = CliRunner().invoke(cli.app, ["models", "--wide"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "v0001" in line)
    assert "AutoETS" in line and "month 0.70" not in line
