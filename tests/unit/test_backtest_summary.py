"""Per-series backtest scores on hand-made arrays (no Spark session): `summary` agrees with
scoring each series on its own mask, keeps the best-selling
`PER_SERIES_MAX` series and says so, and the job server's /models still counts every series.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from salesflow.registry import ModelRegistry
from salesflow.services.jobs.models import model_view
from salesflow.spark.backtest import Backtest
from salesflow.spark.scoring import PER_SERIES_MAX, scores, summary
from salesflow.spark.windows import Window

JAN_2021 = 2021 * 12  # period index of 2021-01
NAMES = ("model", "naive", "seasonal_naive")


def random_backtest(
    rng: np.random.Generator, rows: int, stores: list[str], products: list[str]
) -> Backtest:
    """`rows` rows over 3 windows of random series; some rows lack a baseline or a scale."""
    nan = float("nan")
    actual = rng.integers(0, 40, rows).astype(float)
    actual[rng.random(rows) < 0.3] = 0.0  # many zeros: some series sell nothing
    naive = rng.integers(0, 40, rows).astype(float)
    naive[rng.random(rows) < 0.1] = nan  # not compared
    scale = rng.choice([0.5, 1.0, 2.5, 7.0, 0.0, nan], rows, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    return Backtest(
        windows=[Window(JAN_2021 + 3 * i, (JAN_2021 + 3 * i + 1,)) for i in range(3)],
        window=rng.integers(0, 3, rows),
        store=rng.choice(np.array(stores, dtype=object), rows),
        product=rng.choice(np.array(products, dtype=object), rows),
        period=np.zeros(rows, dtype=int),
        actual=actual,
        model=np.maximum(actual + rng.normal(0, 5, rows), 0.0),  # not integers: inexact sums
        naive=naive,
        seasonal=np.where(rng.random(rows) < 0.1, nan, rng.integers(0, 40, rows)).astype(float),
        series_scale=scale,
        pooled_scale=np.ones(rows),
    )


def per_series_one_by_one(bt: Backtest) -> list[dict[str, Any]]:
    """Every series scored on its own mask: what `summary` did before it grouped the sums."""
    groups: dict[tuple[str, str], list[int]] = {}
    for row in np.flatnonzero(bt.compared).tolist():
        groups.setdefault((bt.store[row], bt.product[row]), []).append(row)
    found = []
    for (store_id, product_id), rows in sorted(groups.items()):
        mask = np.zeros(len(bt.actual), dtype=bool)
        mask[rows] = True
        forecasts = (bt.model[mask], bt.naive[mask], bt.seasonal[mask])
        found.append(
            {
                "store_id": store_id,
                "product_id": product_id,
                **{
                    name: scores(bt.actual[mask], forecast, bt.series_scale[mask])
                    for name, forecast in zip(NAMES, forecasts, strict=True)
                },
                "rows": int(mask.sum()),
            }
        )
    return found


def test_summary_per_series_equals_scoring_each_series_alone() -> None:
    rng = np.random.default_rng(3)
    # Ids whose order as text differs from their order as numbers, and prefixes of one another.
    bt = random_backtest(rng, 400, ["s1", "s10", "s2", "s1x"], ["p", "p1", "p10", "p2", "q"])

    found = summary(bt, horizon=1)

    expected = per_series_one_by_one(bt)
    assert found["per_series"] == expected
    assert found["series"] == len(expected) == 20 and "per_series_note" not in found
    assert any(s["model"]["mase"] is None for s in expected)  # the edge cases did occur
    assert any(s["model"]["mase"] is not None for s in expected)


def test_summary_keeps_the_best_selling_series_and_says_so() -> None:
    rng = np.random.default_rng(5)
    stores, products = [f"s{i}" for i in range(30)], [f"p{i}" for i in range(50)]
    bt = random_backtest(rng, 6000, stores, products)  # ~1,500 series, most of them compared
    bt = dataclasses.replace(bt, actual=bt.actual // 10)  # 0 to 3 a row: many equal sales
    compared = bt.compared
    sales: dict[tuple[str, str], float] = {}
    for i in np.flatnonzero(compared):
        key = (bt.store[i], bt.product[i])
        sales[key] = sales.get(key, 0.0) + bt.actual[i]
    assert len(sales) > PER_SERIES_MAX
    ranked = sorted(sales, key=lambda k: (-sales[k], k))  # ties: the first (store, product)
    best = ranked[:PER_SERIES_MAX]
    assert sales[best[-1]] == sales[ranked[PER_SERIES_MAX]]  # a tie at the cut

    found = summary(bt, horizon=1)

    kept = [(s["store_id"], s["product_id"]) for s in found["per_series"]]
    assert kept == sorted(best)
    assert found["series"] == len(sales)
    assert found["per_series_note"].startswith(
        f"the {PER_SERIES_MAX} series with the most sales of {len(sales)}; "
    )
    everyone = {(s["store_id"], s["product_id"]): s for s in per_series_one_by_one(bt)}
    assert found["per_series"] == [everyone[k] for k in kept]
    assert found["rows"] == int(compared.sum())  # the others still count in the totals


def test_summary_of_200k_rows_and_50k_series_runs() -> None:
    # The old per-series masks made this 50,000 passes over 200,000 rows; no timing asserted.
    rng = np.random.default_rng(1)
    bt = random_backtest(rng, 200_000, ["s"], ["p"])
    series = np.arange(200_000) % 50_000  # 4 rows each, all compared
    bt = dataclasses.replace(
        bt,
        store=np.array([f"s{i}" for i in range(200)], dtype=object)[series // 250],
        product=np.array([f"p{i}" for i in range(250)], dtype=object)[series % 250],
        naive=np.nan_to_num(bt.naive),
        seasonal=np.nan_to_num(bt.seasonal),
    )
    found = summary(bt, horizon=1)
    assert found["series"] == 50_000 and len(found["per_series"]) == PER_SERIES_MAX
    assert len(json.dumps(found["per_series"])) < 1_000_000


def test_the_models_listing_counts_every_series_not_only_the_listed_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    bt = random_backtest(rng, 6000, [f"s{i}" for i in range(30)], [f"p{i}" for i in range(50)])
    backtest = summary(bt, horizon=1)
    registry = ModelRegistry(tmp_path / "models")
    with registry.staging() as folder:
        (folder / "pipeline").mkdir()
        version = registry.publish(
            folder, {"backtest": backtest}, activate=True, reason="a test", actor="test"
        ).version

    shown = model_view(registry.get(version))["backtest"]
    assert shown["series"] == backtest["series"] > PER_SERIES_MAX
    assert "per_series" not in shown and "per_series_note" not in shown
