"""The seeded sales generator: a catalogue of stores and products in, a sales CSV out.

Each row picks a store, a product and a day uniformly; its quantity is L x B with
L = Poisson(store goodness) + 1 and B = Normal(mu, sigma) of that product in the month of THAT row's
date, clipped at 0. (The original generator took every row's month from the first row, which erased
seasonality.) Rows are drawn in numpy chunks and written as each chunk is ready, so memory stays flat
and the output is byte-for-byte the same for a given seed.
"""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO, TextIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from salesflow.errors import InputError
from salesflow.sales.catalog import Catalog, load_catalog
from salesflow.sales.contract import DELIMITERS, REQUIRED_COLUMNS

__all__ = ["GenerateStats", "generate_sales"]

#: Rows drawn and written at a time: ~8 MB of CSV, enough to amortise per-chunk overhead while
#: keeping memory flat whatever the row count. Changing it changes the bytes produced for a seed.
CHUNK_ROWS = 100_000
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class GenerateStats:
    """What `generate_sales` wrote: rows, bytes, time, and rows per store and product id."""

    rows: int
    bytes: int
    seconds: float
    rows_per_store: dict[str, int]
    rows_per_product: dict[str, int]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def generate_sales(
    out: str | os.PathLike[str] | BinaryIO | TextIO,
    *,
    rows: int = 20_000,
    seed: int = 0,
    start: date = date(2018, 1, 1),
    end: date = date(2022, 3, 31),
    catalog: Catalog | None = None,
    delimiter: str = ",",
    timestamps: bool = False,
    progress: Callable[[int], object] | None = None,
) -> GenerateStats:
    """Write `rows` seeded sales (dates from `start` to `end` inclusive) as CSV to a path or stream.

    A path is written through a temp file beside it and renamed on success. `timestamps` writes
    `YYYY-MM-DD HH:MM:SS` with a random time of day instead of `YYYY-MM-DD`. `progress` is called
    with the number of rows written after each chunk.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise InputError(f"rows must be a whole number >= 0, got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    if start > end:
        raise InputError(f"start {start.isoformat()} is after end {end.isoformat()}")
    if delimiter not in DELIMITERS:
        raise InputError(f"delimiter must be one of {DELIMITERS!r}, got {delimiter!r}")
    began = time.perf_counter()
    tables = _Tables(catalog or load_catalog(None), start, end, delimiter, timestamps)
    rng = np.random.default_rng(seed)
    if not isinstance(out, str | os.PathLike):
        return _generate(out, rows, rng, tables, progress, began)
    path = Path(out)
    if path.is_dir():
        raise InputError(f"output path is a folder: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as sink:
            stats = _generate(sink, rows, rng, tables, progress, began)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return stats


class _Tables:
    """The catalogue as arrays: what one chunk indexes into."""

    def __init__(
        self, catalog: Catalog, start: date, end: date, delimiter: str, timestamps: bool
    ) -> None:
        self.catalog, self.delimiter, self.timestamps = catalog, delimiter, timestamps
        first = start.toordinal() - date(1970, 1, 1).toordinal()
        self.first_day = first
        self.days = end.toordinal() - start.toordinal() + 1
        day_numbers = np.arange(first, first + self.days, dtype="datetime64[D]")
        self.month_of_day = day_numbers.astype("datetime64[M]").astype(np.int64) % 12
        self.goodness = np.array([s.goodness for s in catalog.stores])
        monthly = np.array([p.monthly for p in catalog.products])  # (products, 12, 2)
        self.mu, self.sigma = monthly[:, :, 0], monthly[:, :, 1]
        self.store_id = pa.array([s.id for s in catalog.stores])
        self.store_name = pa.array([s.name for s in catalog.stores])
        self.product_id = pa.array([p.id for p in catalog.products])
        self.product_name = pa.array([p.name for p in catalog.products])
        self.product_price = pa.array([_price_text(p.price) for p in catalog.products])
        texts = [s.id for s in catalog.stores] + [s.name for s in catalog.stores]
        texts += [p.id for p in catalog.products] + [p.name for p in catalog.products]
        # Arrow can only quote every string or none; quote only if some name needs it.
        needs_quotes = any(delimiter in t or '"' in t for t in texts)
        self.options = pa_csv.WriteOptions(
            include_header=False,
            delimiter=delimiter,
            quoting_style="needed" if needs_quotes else "none",
        )


def _price_text(price: float) -> str:
    return str(int(price)) if price.is_integer() else repr(price)


def _generate(
    sink: BinaryIO | TextIO,
    rows: int,
    rng: np.random.Generator,
    tables: _Tables,
    progress: Callable[[int], object] | None,
    began: float,
) -> GenerateStats:
    """Write the header, then `rows` rows chunk by chunk; count rows per store and product."""
    catalog = tables.catalog
    per_store = np.zeros(len(catalog.stores), dtype=np.int64)
    per_product = np.zeros(len(catalog.products), dtype=np.int64)
    header = (tables.delimiter.join(REQUIRED_COLUMNS) + "\n").encode()
    written = _write(sink, header)
    done = 0
    while done < rows:
        n = min(CHUNK_ROWS, rows - done)
        chunk, store, product = _chunk(rng, n, tables)
        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(chunk, buffer, tables.options)
        written += _write(sink, buffer.getvalue())
        per_store += np.bincount(store, minlength=len(per_store))
        per_product += np.bincount(product, minlength=len(per_product))
        done += n
        if progress is not None:
            progress(done)
    sink.flush()
    return GenerateStats(
        rows=done,
        bytes=written,
        seconds=time.perf_counter() - began,
        rows_per_store={s.id: int(c) for s, c in zip(catalog.stores, per_store, strict=True)},
        rows_per_product={p.id: int(c) for p, c in zip(catalog.products, per_product, strict=True)},
    )


def _chunk(rng: np.random.Generator, n: int, t: _Tables) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """`n` sales as an Arrow table in the contract's column order, plus their store/product indices."""
    store = rng.integers(0, len(t.goodness), n)
    product = rng.integers(0, len(t.mu), n)
    day = rng.integers(0, t.days, n)
    month = t.month_of_day[day]  # each row's own month: the original's bug was using row 0's
    extra_units = rng.poisson(t.goodness[store]) + 1
    base_units = np.maximum(rng.normal(t.mu[product, month], t.sigma[product, month]), 0.0)
    quantity = np.rint(extra_units * base_units).astype(np.int64)
    if t.timestamps:
        seconds = (day + t.first_day) * _SECONDS_PER_DAY + rng.integers(0, _SECONDS_PER_DAY, n)
        when = pa.array(seconds, type=pa.timestamp("s"))
    else:
        when = pa.array((day + t.first_day).astype(np.int32), type=pa.date32())
    p, s = pa.array(product), pa.array(store)
    columns = [
        t.product_id.take(p),
        t.product_name.take(p),
        t.product_price.take(p),
        t.store_id.take(s),
        t.store_name.take(s),
        pa.array(quantity),
        when,
    ]
    return pa.table(columns, names=list(REQUIRED_COLUMNS)), store, product


def _write(sink: BinaryIO | TextIO, data: bytes | pa.Buffer) -> int:
    raw = memoryview(data)
    if isinstance(sink, io.TextIOBase):
        sink.write(bytes(raw).decode("utf-8"))
    else:
        cast(BinaryIO, sink).write(raw)
    return raw.nbytes
