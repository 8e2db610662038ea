"""The seeded sales generator: determinism, the CSV contract, seasonality, store effects, catalogues."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import salesflow.sales.generate as generate
from salesflow.errors import InputError
from salesflow.sales.catalog import (
    Catalog,
    Product,
    Store,
    catalog_from_dict,
    load_catalog,
    synthetic_catalog,
)
from salesflow.sales.contract import REQUIRED_COLUMNS, check_header
from salesflow.sales.generate import generate_sales


def _csv_bytes(**kwargs: Any) -> bytes:
    out = io.BytesIO()
    generate_sales(out, **kwargs)
    return out.getvalue()


def _rows(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode()), delimiter=delimiter))


@pytest.fixture(scope="module")
def default_rows() -> list[dict[str, str]]:
    """20,000 rows from the default catalogue (the original dataset's size), shared by the module."""
    return _rows(_csv_bytes(rows=20_000, seed=7))


def _flat_catalog(monthly: list[list[float]], goodness: float = 0) -> Catalog:
    """One store and one product: with goodness 0 and sigma 0 a row's quantity is exactly mu."""
    return catalog_from_dict(
        {
            "stores": [{"name": "Only", "goodness": goodness}],
            "products": [{"name": "Thing", "price": 10, "monthly": monthly}],
        }
    )


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    first = _csv_bytes(rows=3_000, seed=11)
    assert first == _csv_bytes(rows=3_000, seed=11)
    assert first != _csv_bytes(rows=3_000, seed=12)


def test_header_is_the_contract_in_order_and_passes_the_header_check() -> None:
    data = _csv_bytes(rows=5, seed=0)
    assert data.split(b"\n", 1)[0].decode() == ",".join(REQUIRED_COLUMNS)
    info = check_header(data)
    assert info.columns == REQUIRED_COLUMNS and info.delimiter == ","


def test_row_count_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "CHUNK_ROWS", 1_000)
    seen: list[int] = []
    out = io.BytesIO()
    stats = generate_sales(out, rows=2_500, seed=3, progress=seen.append)
    rows = _rows(out.getvalue())
    assert len(rows) == stats.rows == 2_500
    assert seen == [1_000, 2_000, 2_500]
    assert stats.bytes == len(out.getvalue())
    assert sum(stats.rows_per_store.values()) == sum(stats.rows_per_product.values()) == 2_500
    per_store: dict[str, int] = defaultdict(int)
    for row in rows:
        per_store[row["store_id"]] += 1
    assert per_store == stats.rows_per_store


def test_zero_rows_writes_only_the_header() -> None:
    assert _csv_bytes(rows=0) == (",".join(REQUIRED_COLUMNS) + "\n").encode()


def test_dates_stay_inside_the_inclusive_range() -> None:
    rows = _rows(_csv_bytes(rows=2_000, seed=5, start=date(2020, 2, 1), end=date(2020, 2, 29)))
    days = {date.fromisoformat(r["date"]) for r in rows}
    assert min(days) == date(2020, 2, 1) and max(days) == date(2020, 2, 29)
    assert len(days) == 29  # every day of the leap February is drawn at least once


def test_quantities_are_non_negative_integers(default_rows: list[dict[str, str]]) -> None:
    assert all(re.fullmatch(r"\d+", r["quantity"]) for r in default_rows)


def test_seasonality_is_in_the_data(default_rows: list[dict[str, str]]) -> None:
    totals: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in default_rows:
        totals[(r["product_name"], int(r["date"][5:7]))].append(int(r["quantity"]))

    def mean(name: str, month: int) -> float:
        values = totals[(name, month)]
        assert len(values) > 100
        return sum(values) / len(values)

    # Radiator: mu 3000 in January, 200 in July; Legion 5: 100 in January, 1500 in July.
    assert mean("Radiator", 1) > 5 * mean("Radiator", 7)
    assert mean("Legion 5", 7) > 5 * mean("Legion 5", 1)
    assert mean("Air Conditionner", 6) > 5 * mean("Air Conditionner", 12)


def test_store_totals_follow_goodness(default_rows: list[dict[str, str]]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for r in default_rows:
        totals[r["store_name"]] += int(r["quantity"])
    # Mean L = goodness + 1: 6 for Giant, 3 for MG, 2 for Aziza.
    assert totals["Giant"] > 1.5 * totals["MG"] > 1.5 * 1.2 * totals["Aziza"]


def test_each_rows_own_month_drives_the_quantity() -> None:
    """Regression: the original used the first row's month for every row, flattening seasons."""
    monthly = [[0.0, 0.0]] * 12
    monthly[6] = [1000.0, 0.0]  # only July sells
    catalog = _flat_catalog(monthly)
    rows = _rows(_csv_bytes(rows=3_000, seed=2, catalog=catalog, start=date(2019, 1, 1)))
    assert rows[0]["date"][5:7] != "07"
    for r in rows:
        assert int(r["quantity"]) == (1000 if r["date"][5:7] == "07" else 0), r
    assert any(r["quantity"] == "1000" for r in rows)


def test_store_effect_is_poisson_plus_one() -> None:
    catalog = _flat_catalog([[100.0, 0.0]] * 12, goodness=3)
    quantities = [int(r["quantity"]) for r in _rows(_csv_bytes(rows=4_000, catalog=catalog))]
    assert all(q % 100 == 0 and q >= 100 for q in quantities)  # L >= 1, B exactly 100
    assert 3.8 < sum(quantities) / len(quantities) / 100 < 4.2  # E[L] = goodness + 1 = 4


def test_tab_delimiter_and_timestamps() -> None:
    data = _csv_bytes(rows=500, seed=4, delimiter="\t", timestamps=True)
    lines = data.decode().splitlines()
    assert lines[0].split("\t") == list(REQUIRED_COLUMNS)
    stamps = [line.split("\t")[6] for line in lines[1:]]
    assert all(len(line.split("\t")) == 7 for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", s) for s in stamps)
    assert len({s[11:] for s in stamps}) > 400  # a random time of day, not always midnight


def test_path_stream_and_text_outputs_are_identical(tmp_path: Path) -> None:
    expected = _csv_bytes(rows=1_000, seed=9)
    target = tmp_path / "out" / "sales.csv"
    stats = generate_sales(target, rows=1_000, seed=9)
    assert target.read_bytes() == expected and stats.bytes == len(expected)
    assert sorted(p.name for p in target.parent.iterdir()) == ["sales.csv"]
    text = io.StringIO()
    generate_sales(text, rows=1_000, seed=9)
    assert text.getvalue().encode() == expected


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def fail(_: int) -> None:
        raise RuntimeError("stop")

    target = tmp_path / "sales.csv"
    with pytest.raises(RuntimeError):
        generate_sales(target, rows=10, progress=fail)
    assert list(tmp_path.iterdir()) == []


def test_names_with_delimiters_are_quoted() -> None:
    catalog = catalog_from_dict(
        {
            "stores": [{"name": 'Shop "A", Tunis', "goodness": 1}],
            "products": [{"name": "Fan, 12 inch", "price": 19.99, "monthly": [[5, 1]] * 12}],
        }
    )
    rows = _rows(_csv_bytes(rows=20, catalog=catalog))
    assert {(r["store_name"], r["product_name"], r["product_price"]) for r in rows} == {
        ('Shop "A", Tunis', "Fan, 12 inch", "19.99")
    }


def test_default_catalogue_matches_the_original() -> None:
    catalog = load_catalog(None)
    assert [(s.name, s.goodness) for s in catalog.stores] == [
        ("Aziza", 1),
        ("MG", 2),
        ("Giant", 5),
    ]
    prices = {p.name: p.price for p in catalog.products}
    assert prices == {"Legion 5": 3500, "Air Conditionner": 1500, "Radiator": 2000}
    radiator = next(p for p in catalog.products if p.name == "Radiator")
    assert radiator.monthly[0] == (3000, 200) and radiator.monthly[11] == (3000, 100)
    assert catalog.stores[0].id == hashlib.sha256(b"store:Aziza").hexdigest()[:24]
    assert catalog.products[0].id == hashlib.sha256(b"product:Legion 5").hexdigest()[:24]


def test_catalogue_json_round_trip_and_explicit_ids(tmp_path: Path) -> None:
    catalog = Catalog(
        stores=(Store("s1", "One", 2.0),),
        products=(Product("p1", "Widget", 9.5, ((1.0, 0.5),) * 12),),
    )
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog.to_dict()))
    assert load_catalog(path) == catalog
    assert load_catalog(str(path)) == catalog


def _store_entry(**changes: Any) -> dict[str, Any]:
    return {"name": "MG", "goodness": 2, **changes}


def _product_entry(**changes: Any) -> dict[str, Any]:
    return {"name": "Fan", "price": 10, "monthly": [[5, 1]] * 12, **changes}


@pytest.mark.parametrize(
    ("stores", "products", "expected"),
    [
        ([_store_entry(goodness="five")], [_product_entry()], r"stores\[0\] \('MG'\).*'goodness'"),
        ([_store_entry(goodness=-1)], [_product_entry()], r"'goodness' must be a number from 0"),
        ([{"goodness": 1}], [_product_entry()], r"stores\[0\].*'name' must be a non-empty"),
        ([_store_entry(goodnes=1)], [_product_entry()], r"unknown field\(s\) goodnes"),
        ([_store_entry()], [_product_entry(price=None)], r"products\[0\] \('Fan'\).*'price'"),
        ([_store_entry()], [_product_entry(monthly=[[5, 1]] * 11)], r"'monthly'.*got 11"),
        ([_store_entry()], [_product_entry(monthly=[[5, -1]] * 12)], r"'monthly\[0\]'"),
        ([_store_entry()], [_product_entry(name="Fan\nX")], r"'name' must not contain a line"),
        ([], [_product_entry()], r"'stores' must be a non-empty list"),
        ([_store_entry(), _store_entry()], [_product_entry()], r"two stores have the id"),
    ],
)
def test_invalid_catalogue_names_the_problem(
    tmp_path: Path, stores: list[Any], products: list[Any], expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"stores": stores, "products": products}))
    with pytest.raises(InputError, match=expected) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_unreadable_catalogue_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_catalog(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"stores": [\n  {"name": "A",}\n]}')
    with pytest.raises(InputError, match=r"not valid JSON: .* line 2"):
        load_catalog(broken)


def test_mongo_catalogue_without_pymongo_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)  # makes `import pymongo` fail
    with pytest.raises(InputError, match=re.escape("pip install 'salesflow[mongo]'")):
        load_catalog("mongodb://127.0.0.1:27017/sales")


def test_synthetic_catalogue_has_the_requested_sizes_and_unique_ids() -> None:
    catalog = synthetic_catalog(200, 2_000, seed=1)
    assert len(catalog.stores) == 200 and len(catalog.products) == 2_000
    assert len({s.id for s in catalog.stores}) == 200
    assert len({p.id for p in catalog.products}) == 2_000
    assert {s.goodness for s in catalog.stores} == {1, 2, 3, 4, 5}
    assert all(
        len(p.monthly) == 12 and all(sd >= 0 for _, sd in p.monthly) for p in catalog.products
    )
    assert len({p.monthly for p in catalog.products}) > 1_000  # profiles really vary
    assert synthetic_catalog(200, 2_000, seed=1) == catalog
    assert catalog_from_dict(catalog.to_dict()) == catalog  # it passes the catalogue's validation


def test_generating_from_a_synthetic_catalogue_uses_many_keys() -> None:
    stats = generate_sales(io.BytesIO(), rows=20_000, catalog=synthetic_catalog(20, 200, seed=0))
    assert len([c for c in stats.rows_per_product.values() if c]) == 200
    assert len([c for c in stats.rows_per_store.values() if c]) == 20


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rows": -1}, "rows must be"),
        ({"seed": -3}, "seed must be"),
        ({"start": date(2022, 1, 2), "end": date(2022, 1, 1)}, "is after end"),
        ({"delimiter": "|"}, "delimiter must be one of"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        generate_sales(io.BytesIO(), **kwargs)
