"""The catalogue of stores and products the generator draws from: the packaged default (the original
project's three stores and three products), a JSON file, a MongoDB collection, or a synthetic large one.

Every entry is validated with a message naming the entry and field; ids missing from a catalogue are
derived from the name, so the same name always gets the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from salesflow.errors import InputError, UnavailableError

__all__ = [
    "Catalog",
    "Product",
    "Store",
    "catalog_from_dict",
    "derived_id",
    "load_catalog",
    "synthetic_catalog",
]

#: Bounds that keep L x B far inside int64 and reject obvious typos (a price of 1e30).
MAX_GOODNESS = 1e6
MAX_UNITS = 1e9
MAX_PRICE = 1e9
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
