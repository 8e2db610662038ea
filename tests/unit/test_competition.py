"""The competition's scoreboard: forecasts aligned to backtest rows, scored on common rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from salesflow.spark.backtest import Backtest
from salesflow.spark.competition import aligned, calibrate, leaderboard, winner


def _backtest(model: list[float]) -> Backtest:
    n = len(model)
    return dataclasses.replace(
        Backtest.empty(),
        window=np.array([0, 0, 1, 1][:n]),
        store=np.array(["s1", "s2", "s1", "s2"][:n], dtype=object),
        product=np.array(["p1"] * n, dtype=object),
        period=np.array([100, 100, 101, 101][:n]),
        actual=np.array([10.0, 20.0, 30.0, 40.0][:n]),
        model=np.array(model, float),
        naive=np.full(n, 1.0),
        seasonal=np.full(n, 1.0),
        series_scale=np.full(n, 5.0),
        pooled_scale=np.full(n, 5.0),
    )


def _forecasts(rows: list[tuple[int, str, int, str, float]]) -> pa.Table:
    window, store, period, model, value = zip(*rows, strict=True)
    return pa.table(
        {
            "window": pa.array(window, pa.int32()),
            "store_id": list(store),
            "product_id": ["p1"] * len(rows),
            "period_index": pa.array(period, pa.int32()),
            "model": list(model),
            "forecast": list(value),
        }
    )


def test_aligned_puts_each_forecast_on_its_row_and_nan_where_missing() -> None:
    bt = _backtest([0.0, 0.0, 0.0, 0.0])
    table = _forecasts(
        [
            (1, "s2", 101, "AutoETS", 41.0),
            (0, "s1", 100, "AutoETS", 11.0),
            (0, "s1", 100, "AutoTheta", 99.0),  # another model: not taken
            (1, "s1", 101, "AutoETS", 29.0),
        ]
    )
    got = aligned(bt, table, "AutoETS").model
    np.testing.assert_array_equal(got[[0, 2, 3]], [11.0, 29.0, 41.0])
    assert np.isnan(got[1])  # (window 0, s2) has no AutoETS forecast


def test_leaderboard_scores_every_candidate_on_the_common_rows_best_first() -> None:
    forest = _backtest([12.0, 25.0, 30.0, 50.0])  # errors 2, 5, 0, 10
    ets = _backtest([10.0, np.nan, 31.0, 41.0])  # errors 0, -, 1, 1 (row 1 missing)
    board = leaderboard({"forest": ("pipeline", forest), "AutoETS": ("statistical", ets)})
    assert [e.name for e in board] == ["AutoETS", "forest"]
    assert [e.rank for e in board] == [1, 2]
    assert all(e.rows == 3 for e in board)  # row 1 is left out for both
    by_name = {e.name: e for e in board}
    assert by_name["AutoETS"].wape == pytest.approx(2 / 80)
    assert by_name["forest"].wape == pytest.approx(12 / 80)
    assert by_name["forest"].bias == pytest.approx(12 / 80)
    assert by_name["AutoETS"].mase == pytest.approx(np.mean([0, 1, 1]) / 5, abs=1e-4)
    assert winner(board).name == "AutoETS"


def test_a_tie_goes_to_the_candidate_listed_first() -> None:
    same = [11.0, 21.0, 31.0, 41.0]
    board = leaderboard(
        {"forest": ("pipeline", _backtest(same)), "AutoETS": ("statistical", _backtest(same))}
    )
    assert winner(board).name == "forest"


def test_an_empty_leaderboard_has_no_winner() -> None:
    assert leaderboard({}) == []
    with pytest.raises(ValueError, match="no winner"):
        winner([])


def test_calibrate_scales_the_models_own_intervals_to_cover_what_they_claim() -> None:
    # Two windows; the model's own upper half-width is 2 everywhere and its errors are 1 and 4
    # in window 0 (ratios 0.5 and 2), 1 and 1 in window 1 (ratios 0.5).
    bt = dataclasses.replace(
        _backtest([10.0, 20.0, 30.0, 40.0]), actual=np.array([11.0, 24.0, 31.0, 41.0])
    )
    high = bt.model + 2.0
    found = calibrate(bt, {"0.8": (bt.model - 2.0, high)})
    # ratios 0.5, 2, 0.5, 0.5: the ceil(5 * 0.8) = 4th smallest is 2.0
    assert found["factors"] == {"0.8": 2.0}
    # out of sample: window 0's ratios (0.5, 2) give factor 2 -> half-width 4 covers window 1
    assert found["coverage_last_window"] == {"0.8": 1.0}
    narrow = calibrate(bt, {"0.8": (bt.model - 2.0, bt.model + 8.0)})  # ratios 1/8 and 1/2
    assert narrow["factors"]["0.8"] == pytest.approx(0.5)
