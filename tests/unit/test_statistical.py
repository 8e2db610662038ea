"""The per-series statistical forecasts on pandas frames, without Spark: seasonal patterns, gap
filling, short series, fallbacks, clipping, the combination, and parameter checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salesflow.errors import ConfigurationError
from salesflow.spark.statistical import (
    COMBINATION,
    STAT_MODELS,
    StatSpec,
    forecast_series,
    output_columns,
    output_schema,
)

#: A year of demand with a clear shape; repeated exactly, every model should find it.
PATTERN = [10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 28.0, 24.0, 18.0, 14.0, 11.0, 9.0]
START = 2020 * 12  # 2020-01 as a period index


def _history(
    values: list[float], origin: int | None = None, skip: tuple[int, ...] = ()
) -> pd.DataFrame:
    """One series' rows from START, one per value (except offsets in `skip`), window 0."""
    last = START + len(values) - 1
    return pd.DataFrame(
        {
            "window": 0,
            "origin": last if origin is None else origin,
            "store_id": "s1",
            "product_id": "p1",
            "period_index": [START + k for k in range(len(values)) if k not in skip],
            "quantity": [v for k, v in enumerate(values) if k not in skip],
        }
    )


def _model(out: pd.DataFrame, name: str) -> pd.DataFrame:
    return out[out["model"] == name].reset_index(drop=True)


def test_a_perfectly_seasonal_series_is_forecast_as_its_pattern() -> None:
    spec = StatSpec(STAT_MODELS, season=12, horizon=6)
    out = forecast_series(_history(PATTERN * 4), spec)
    assert list(out.columns) == output_columns((80, 95))
    assert list(out["model"].unique()) == [*STAT_MODELS, COMBINATION]
    for name in [*STAT_MODELS, COMBINATION]:
        rows = _model(out, name)
        assert rows["period_index"].tolist() == list(range(START + 48, START + 54))
        np.testing.assert_allclose(rows["forecast"], PATTERN[:6], rtol=0.02, err_msg=name)
    assert not out["fallback"].any()


def test_a_missing_month_sold_nothing() -> None:
    # Seasonal-naive repeats the last year: the month skipped 12 before the first forecast is 0.
    spec = StatSpec(("SeasonalNaive",), season=12, horizon=2)
    out = _model(forecast_series(_history(PATTERN * 2, skip=(12,)), spec), "SeasonalNaive")
    assert out["forecast"].tolist() == [0.0, PATTERN[1]]


def test_rows_after_the_origin_are_ignored() -> None:
    spec = StatSpec(("SeasonalNaive", "AutoTheta"), season=12, horizon=3)
    history = _history(PATTERN * 2)
    later = _history(PATTERN * 2 + [1000.0] * 3, origin=START + 23)
    pd.testing.assert_frame_equal(forecast_series(later, spec), forecast_series(history, spec))


def test_a_short_series_is_fitted_without_a_season() -> None:
    # 5 months < 2 x 12: season 1, so seasonal-naive is the last value; the others still fit.
    spec = StatSpec(("AutoARIMA", "SeasonalNaive"), season=12, horizon=3)
    out = forecast_series(_history([4.0, 6.0, 5.0, 7.0, 8.0]), spec)
    assert len(out) == 3 * 3
    assert _model(out, "SeasonalNaive")["forecast"].tolist() == [8.0] * 3
    assert not out["fallback"].any()


def test_a_model_that_cannot_fit_falls_back_to_seasonal_naive() -> None:
    # AutoETS and AutoTheta refuse 3 observations ("tiny datasets"); their rows are the fallback's.
    spec = StatSpec(("AutoETS", "AutoTheta", "SeasonalNaive"), season=12, horizon=2)
    out = forecast_series(_history([3.0, 5.0, 4.0]), spec)
    naive = _model(out, "SeasonalNaive").drop(columns=["model", "fallback"])
    for name in ("AutoETS", "AutoTheta"):
        rows = _model(out, name)
        assert rows["fallback"].all()
        pd.testing.assert_frame_equal(rows.drop(columns=["model", "fallback"]), naive)
    assert not _model(out, "SeasonalNaive")["fallback"].any()
    assert _model(out, COMBINATION)["fallback"].all()


def test_a_single_observation_is_forecast_as_itself_without_an_interval() -> None:
    spec = StatSpec(STAT_MODELS, season=12, horizon=2)
    out = forecast_series(_history([7.0]), spec)
    assert len(out) == 5 * 2
    assert out["forecast"].tolist() == [7.0] * 10
    assert out["fallback"].all()
    assert out[["lo_80", "hi_80", "lo_95", "hi_95"]].isna().all().all()


def test_a_series_without_history_at_the_origin_has_no_rows() -> None:
    spec = StatSpec(("SeasonalNaive",), season=12, horizon=2)
    out = forecast_series(_history([5.0, 6.0], origin=START - 1), spec)
    assert out.empty
    assert list(out.columns) == output_columns((80, 95))


def test_forecasts_are_never_negative_and_bounds_bracket_them() -> None:
    # Falling to zero with noise: unclipped, the lower bounds and trends go below 0.
    rng = np.random.default_rng(3)
    values = np.maximum(0.0, np.linspace(30, 0, 30) + rng.normal(0, 4, 30)).round().tolist()
    spec = StatSpec(STAT_MODELS, season=12, horizon=6)
    out = forecast_series(_history(values), spec)
    assert (out[["forecast", "lo_80", "lo_95"]] >= 0).all().all()
    assert (out["lo_95"] <= out["lo_80"]).all() and (out["lo_80"] <= out["forecast"]).all()
    assert (out["forecast"] <= out["hi_80"]).all() and (out["hi_80"] <= out["hi_95"]).all()


def test_the_combination_is_the_median_of_the_models() -> None:
    models = ("AutoETS", "AutoTheta", "SeasonalNaive")
    rng = np.random.default_rng(5)
    values = (np.array(PATTERN * 3) + rng.normal(0, 2, 36)).round(1).tolist()
    out = forecast_series(_history(values), StatSpec(models, season=12, horizon=4))
    each = np.stack([_model(out, m)["forecast"].to_numpy() for m in models])
    np.testing.assert_allclose(_model(out, COMBINATION)["forecast"], np.median(each, axis=0))


def test_the_same_rows_in_any_order_give_the_same_forecasts() -> None:
    spec = StatSpec(("AutoETS", "AutoTheta", "SeasonalNaive"), season=12, horizon=3)
    history = _history(PATTERN * 3, skip=(5, 17))
    shuffled = history.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(forecast_series(shuffled, spec), forecast_series(history, spec))


def test_the_output_schema_names_a_bound_pair_per_level() -> None:
    assert output_schema((50, 90)) == (
        "window int, store_id string, product_id string, period_index int, model string, "
        "forecast double, lo_50 double, hi_50 double, lo_90 double, hi_90 double, fallback boolean"
    )


@pytest.mark.parametrize(
    ("models", "season", "horizon", "levels", "says"),
    [
        (("AutoETS", "Prophet"), 12, 6, (80,), "got AutoETS, Prophet"),
        ((), 12, 6, (80,), "got none"),
        (("AutoETS", "AutoETS"), 12, 6, (80,), "listed twice"),
        (("AutoETS",), 0, 6, (80,), "at least 1"),
        (("AutoETS",), 12, 6, (100,), "1..99"),
    ],
)
def test_unusable_parameters_are_refused(
    models: tuple[str, ...], season: int, horizon: int, levels: tuple[int, ...], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        StatSpec(models, season, horizon, levels)
