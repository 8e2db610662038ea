"""The seeded sales generator: a catalogue of stores and products in, a sales CSV out.

Each row picks a store, a product and a day uniformly; its quantity is L x B with
L = Poisson(store goodness) + 1 and B = Normal(mu, sigma) of that product in the month of THAT row's
date, clipped at 0. (The original generator took every row's month from the first row, which erased
seasonality.) Rows are drawn in numpy chunks and written as each chunk is ready, so memory stays flat
and the output is byte-for-byte the same for a given seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from salesflow.errors import InputError, UnavailableError
from salesflow.schema import DELIMITERS, REQUIRED_COLUMNS

__all__ = [
    "Catalog",
    "GenerateStats",
    "Product",
    "Store",
    "catalog_from_dict",
    "derived_id",
    "generate_sales",
    "load_catalog",
    "synthetic_catalog",
]

#: Rows drawn and written at a time: ~8 MB of CSV, enough to amortise per-chunk overhead while
#: keeping memory flat whatever the row count. Changing it changes the bytes produced for a seed.
CHUNK_ROWS = 100_000
#: Bounds that keep L x B far inside int64 and reject obvious typos (a price of 1e30).
MAX_GOODNESS = 1e6
MAX_UNITS = 1e9
MAX_PRICE = 1e9
_SECONDS_PER_DAY = 86_400
_MONGO_TIMEOUT_MS = 5_000  # fail fast on an unreachable server instead of pymongo's 30 s default
_ID_HEX = 24  # the length of a MongoDB ObjectId, which the original catalogue's ids were


@dataclass(frozen=True)
class Store:
    """A store; `goodness` is the mean number of extra units per sale (a Poisson rate)."""

    id: str
    name: str
    goodness: float


@dataclass(frozen=True)
class Product:
    """A product; `monthly[m]` is the (mu, sigma) of units per sale in month m+1."""

    id: str
    name: str
    price: float
    monthly: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Catalog:
    """The stores and products sales are drawn from."""

    stores: tuple[Store, ...]
    products: tuple[Product, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `load_catalog` reads back (ids included)."""
        return {
            "stores": [{"id": s.id, "name": s.name, "goodness": s.goodness} for s in self.stores],
            "products": [
                {
                    "id": p.id,
                    "name": p.name,
                    "price": p.price,
                    "monthly": [list(m) for m in p.monthly],
                }
                for p in self.products
            ],
        }


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


# --- catalogues --------------------------------------------------------------------------------


def derived_id(kind: str, name: str) -> str:
    """A stable 24-hex id for a catalogue entry without one: the same name always gets the same id."""
    return hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:_ID_HEX]


def load_catalog(source: str | Path | None = None) -> Catalog:
    """The packaged default (None), a catalogue JSON file, or a mongodb:// URL's stores/products."""
    if source is None:
        text = resources.files("salesflow").joinpath("data/catalog.json").read_text("utf-8")
        return catalog_from_dict(json.loads(text), "the packaged catalogue")
    if isinstance(source, str) and source.startswith(("mongodb://", "mongodb+srv://")):
        return _load_mongo(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"catalogue file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"catalogue path is a folder, not a JSON file: {path}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return catalog_from_dict(data, str(path))


def catalog_from_dict(data: Any, source: str = "catalogue") -> Catalog:
    """Validate a parsed catalogue; InputErrors name the entry and field that is wrong."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a JSON object with 'stores' and 'products'")
    _no_extra(data, {"stores", "products", "description"}, source)
    stores = tuple(
        Store(
            id=_id(entry, "store", where),
            name=_text(entry.get("name"), "name", where),
            goodness=_number(entry, "goodness", where, 0, MAX_GOODNESS),
        )
        for where, entry in _entries(data, "stores", {"id", "name", "goodness"}, source)
    )
    products = tuple(
        Product(
            id=_id(entry, "product", where),
            name=_text(entry.get("name"), "name", where),
            price=_number(entry, "price", where, 0, MAX_PRICE),
            monthly=_monthly(entry, where),
        )
        for where, entry in _entries(data, "products", {"id", "name", "price", "monthly"}, source)
    )
    for kind, ids in (("store", [s.id for s in stores]), ("product", [p.id for p in products])):
        seen: set[str] = set()
        for entry_id in ids:
            if entry_id in seen:
                raise InputError(
                    f"{source}: two {kind}s have the id {entry_id!r} (ids must be unique; "
                    "an entry without an id gets one derived from its name)"
                )
            seen.add(entry_id)
    return Catalog(stores, products)


def _entries(
    data: Mapping[str, Any], key: str, allowed: set[str], source: str
) -> list[tuple[str, Mapping[str, Any]]]:
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise InputError(f"{source}: '{key}' must be a non-empty list")
    out = []
    for i, entry in enumerate(items):
        where = f"{source}: {key}[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name']!r})"
        _no_extra(entry, allowed, where)
        out.append((where, entry))
    return out


def _no_extra(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k in entry if k not in allowed)
    if extra:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {field!r} must be a non-empty string, got {value!r:.60}")
    if "\n" in value or "\r" in value:
        raise InputError(f"{where}: field {field!r} must not contain a line break")
    return value


def _id(entry: Mapping[str, Any], kind: str, where: str) -> str:
    if "id" in entry:
        return _text(entry["id"], "id", where)
    return derived_id(kind, _text(entry.get("name"), "name", where))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(entry: Mapping[str, Any], field: str, where: str, lo: float, hi: float) -> float:
    value: Any = entry.get(field)
    if not _is_number(value) or not lo <= value <= hi:
        raise InputError(
            f"{where}: field {field!r} must be a number from {lo:g} to {hi:g}, got {value!r:.60}"
        )
    return float(value)


def _monthly(entry: Mapping[str, Any], where: str) -> tuple[tuple[float, float], ...]:
    months = entry.get("monthly")
    if not isinstance(months, list) or len(months) != 12:
        got = f"{len(months)} entries" if isinstance(months, list) else repr(months)[:60]
        raise InputError(
            f"{where}: field 'monthly' must list 12 [mu, sigma] pairs, January first; got {got}"
        )
    pairs = []
    for m, pair in enumerate(months):
        ok = isinstance(pair, list) and len(pair) == 2 and all(_is_number(v) for v in pair)
        if not ok or not (abs(pair[0]) <= MAX_UNITS and 0 <= pair[1] <= MAX_UNITS):
            raise InputError(
                f"{where}: field 'monthly[{m}]' must be [mu, sigma] with |mu| and sigma <= "
                f"{MAX_UNITS:g} and sigma >= 0, got {pair!r:.60}"
            )
        pairs.append((float(pair[0]), float(pair[1])))
    return tuple(pairs)


def _load_mongo(url: str) -> Catalog:
    """Read the `stores` and `products` collections of the URL's database (pymongo is an extra)."""
    try:
        import pymongo
        from pymongo.errors import ConfigurationError, PyMongoError
    except ImportError:
        raise InputError(
            "reading a catalogue from MongoDB needs pymongo: pip install 'salesflow[mongo]'"
        ) from None
    where = f"mongodb at {urlsplit(url).hostname or '?'}"  # never the URL: it may hold a password
    fields = {"stores": ["id", "name", "goodness"], "products": ["id", "name", "price", "monthly"]}
    data: dict[str, list[dict[str, Any]]] = {}
    try:
        client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=_MONGO_TIMEOUT_MS)
        try:
            db = client.get_default_database()
            for collection, keep in fields.items():
                docs = db[collection].find({}, projection=keep).sort("_id", 1)
                data[collection] = [_from_mongo(doc) for doc in docs]
        finally:
            client.close()
    except ConfigurationError as exc:
        detail = str(exc).replace(urlsplit(url).password or "\0", "***")
        raise InputError(f"{where}: {detail} (the URL must name a database: .../DBNAME)") from None
    except PyMongoError as exc:
        raise UnavailableError(
            f"cannot read the catalogue from {where}: {type(exc).__name__}"
        ) from None
    return catalog_from_dict(data, where)


def _from_mongo(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A MongoDB document as a catalogue entry: its ObjectId becomes the id unless it has one."""
    entry = {k: v for k, v in doc.items() if k != "_id"}
    if "id" not in entry and "_id" in doc:
        entry["id"] = str(doc["_id"])
    return entry


def synthetic_catalog(n_stores: int = 200, n_products: int = 2000, seed: int = 0) -> Catalog:
    """A large catalogue for benchmarks: profiles are the default products', scaled and shifted."""
    if n_stores < 1 or n_products < 1:
        raise InputError(
            f"a catalogue needs at least 1 store and 1 product, got {n_stores}/{n_products}"
        )
    rng = np.random.default_rng(seed)
    bases = load_catalog(None).products
    stores = tuple(
        Store(derived_id("store", name), name, float(g))
        for name, g in zip(
            (f"Store {i:04d}" for i in range(1, n_stores + 1)),
            rng.integers(1, 6, n_stores),  # goodness 1..5, like the default stores
            strict=True,
        )
    )
    products = []
    for i in range(1, n_products + 1):
        base = bases[int(rng.integers(len(bases)))]
        # 0.05-1.5x the base volume (most products sell less than the flagship three), its season
        # moved up to two months either way, and a price of 0.2-2x the base product's.
        scale, shift = float(rng.uniform(0.05, 1.5)), int(rng.integers(-2, 3))
        monthly = np.roll(np.array(base.monthly) * scale, shift, axis=0).round(1)
        name = f"Product {i:05d}"
        price = float(round(base.price * rng.uniform(0.2, 2.0)))
        pairs = tuple((float(mu), float(sd)) for mu, sd in monthly)
        products.append(Product(derived_id("product", name), name, price, pairs))
    return Catalog(stores, tuple(products))


# --- generation --------------------------------------------------------------------------------


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
