"""How the competition should pick among the statistical candidates, measured at a tuning origin.

`python -m bench.accuracy_selection [--shift 6]` cuts the last `--shift` months off every monthly
dataset of the accuracy benchmark (so the benchmark's own holdout is never seen), holds out the 6
months before that cut, and compares selection rules over statsforecast's rolling-origin
cross-validation of SeasonalNaive, AutoETS and AutoTheta (and their median, "Combination"):

- `global`: the candidate with the lowest backtest WAPE over every series (what training does);
- `per_series`: each series' own best candidate;
- `inverse_wape`: the three models weighted by 1 / backtest WAPE;
- `top2`: the mean of the two best;

each for backtests of 3 windows x 3 months (training's default) and 3 windows x 6 months. It
prints, per rule, its holdout WAPE over the best anchor's (SeasonalNaive, AutoETS, AutoTheta,
AutoARIMA) on each dataset, their geometric mean and how often it matches the best. pandas and
statsforecast only, no Spark; ~6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bench import accuracy_data as data
from bench.accuracy_salesflow import generated_sales

BASE = ("SeasonalNaive", "AutoETS", "AutoTheta")
CANDIDATES = (*BASE, "Combination")
ANCHORS = (*BASE, "AutoARIMA")
#: Backtests compared: (months per window, windows); windows step by their length.
BACKTESTS = ((3, 3), (6, 3))


def _datasets(folder: Path) -> dict[str, Callable[[], Path]]:
    def generated(rows: int, seed: int, stores: int = 0, products: int = 0) -> Path:
        path = folder / f"generated-{rows}-{seed}-{stores}x{products}.csv"
        return generated_sales(path, rows, seed, stores, products)

    return {
        "generated 3x3 20k s11": lambda: generated(20_000, 11),
        "generated 3x3 50k s23": lambda: generated(50_000, 23),
        "generated 5x8 40k s3": lambda: generated(40_000, 3, 5, 8),
        "generated 10x12 80k s7": lambda: generated(80_000, 7, 10, 12),
        "original format 3x3": lambda: data.original_format_sales(folder / "original.csv", 0),
        **{
            f"real: {name}": (
                lambda name=name: data.real_series_sales(folder / f"{name}.csv", name)
            )
            for name in data.REAL_SERIES
        },
    }


def _models(with_arima: bool) -> list[object]:
    from statsforecast import models

    found = [
        models.SeasonalNaive(season_length=12),
        models.AutoETS(season_length=12),
        models.AutoTheta(season_length=12),
    ]
    return [*found, models.AutoARIMA(season_length=12)] if with_arima else found


def _wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.abs(actual - forecast).sum() / np.abs(actual).sum())


def _with_combination(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(Combination=frame[list(BASE)].median(axis=1))


def _rules(cv: pd.DataFrame, held: pd.DataFrame) -> dict[str, float]:
    """Each rule's holdout WAPE, chosen from the cross-validation `cv`."""
    y = held["y"].to_numpy()
    scores = {m: _wape(cv["y"].to_numpy(), cv[m].to_numpy()) for m in CANDIDATES}
    per_series = {
        uid: min(CANDIDATES, key=lambda m, g=g: _wape(g["y"].to_numpy(), g[m].to_numpy()))
        for uid, g in cv.groupby("unique_id")
    }
    picked = np.array(
        [held[per_series[uid]].iloc[i] for i, uid in enumerate(held["unique_id"])], dtype=float
    )
    weights = np.array([1 / scores[m] for m in BASE])
    weights /= weights.sum()
    top = sorted(BASE, key=scores.__getitem__)[:2]
    return {
        "global": _wape(y, held[min(CANDIDATES, key=scores.__getitem__)].to_numpy()),
        "per_series": _wape(y, picked),
        "inverse_wape": _wape(
            y, sum(w * held[m].to_numpy() for w, m in zip(weights, BASE, strict=True))
        ),
        "top2": _wape(y, held[list(top)].mean(axis=1).to_numpy()),
    }


def study(shift: int, folder: Path) -> dict[str, dict[str, float]]:
    """{rule: {dataset: holdout WAPE / best anchor's}} at the origin `shift` months earlier."""
    from statsforecast import StatsForecast

    ratios: dict[str, dict[str, float]] = {}
    for name, make in _datasets(folder).items():
        cells = data.series_cells(make(), "month")
        cells = cells[cells["ds"] <= cells["ds"].max() - pd.DateOffset(months=shift)]
        split = data.split(cells, 6, "month")
        train = split.train[["unique_id", "ds", "y"]]
        fitted = StatsForecast(models=_models(with_arima=True), freq="MS", n_jobs=1)
        held = fitted.forecast(df=train, h=6).merge(split.holdout, on=["unique_id", "ds"])
        held = _with_combination(held)
        best = min(_wape(held["y"].to_numpy(), held[m].to_numpy()) for m in ANCHORS)
        for months, windows in BACKTESTS:
            cv = StatsForecast(models=_models(with_arima=False), freq="MS", n_jobs=1)
            folds = cv.cross_validation(df=train, h=months, n_windows=windows, step_size=months)
            for rule, found in _rules(_with_combination(folds), held).items():
                ratios.setdefault(f"{windows}x{months} {rule}", {})[name] = found / best
        print(f"{name}: best anchor WAPE {best:.3f}", flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy_selection", description=__doc__)
    parser.add_argument("--shift", type=int, default=6, help="months cut off before the holdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ratios = study(args.shift, Path(folder))
    print(f"\nholdout WAPE / best anchor's, origin {args.shift} months before the benchmark's")
    for rule, found in ratios.items():
        values = np.array(list(found.values()))
        geo = float(np.exp(np.log(values).mean()))
        matched = int((values <= 1.0001).sum())
        cells = " ".join(f"{v:.2f}" for v in values)
        print(
            f"{rule:24s} geo {geo:.3f} max {values.max():.2f} best on {matched}/{values.size}: {cells}"
        )


if __name__ == "__main__":
    main()
