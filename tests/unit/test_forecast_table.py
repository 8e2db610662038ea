"""Versions that answer from a forecast table: the table's contract, lookups, the answer rule
(the table's numbers, periods outside its horizon flagged, the fallback chain for ids it does not
hold) and the forecast service and CSV answers built on it. No Spark, no training."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from salesflow.errors import InputError, ModelError
from salesflow.registry import ModelRegistry, ModelVersion
from salesflow.serving.facts import ModelFacts
from salesflow.serving.model import ServedModel
from salesflow.serving.predict_csv import predict_csv
from salesflow.serving.service import ForecastService, Query
from salesflow.serving.table import (
    TABLE_FILE,
    ForecastTable,
    TableSpec,
    month_indexes,
    period_label,
    write_table,
)
from tests.fixtures.forecast_tables import (
    FALLBACK,
    FALLBACK_PROFILES,
    FIRST_DAY,
    FIRST_MONTH,
    NOT_HELD,
    day_periods,
    publish_table_version,
    table_columns,
)

LEVELS = ("0.8", "0.95")


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


@pytest.fixture
def month_version(registry: ModelRegistry) -> tuple[ModelVersion, dict[str, Any]]:
    return publish_table_version(registry)


def _rows(columns: dict[str, Any]) -> list[tuple[str, str, int]]:
    return list(
        zip(columns["store_id"], columns["product_id"], columns["period_index"], strict=True)
    )


def _month(index: int) -> tuple[int, int]:
    year, month = divmod(index, 12)
    return year, month + 1


# --- the table -----------------------------------------------------------------------------


def test_period_indexes_are_the_spark_definitions() -> None:
    assert month_indexes([2024, 2023], [1, 12]).tolist() == [2024 * 12, 2023 * 12 + 11]
    assert period_label(2024 * 12 + 2, "month") == "2024-03"
    assert day_periods()[0] == (FIRST_DAY - date(1970, 1, 1)).days
    assert period_label(day_periods()[0], "day") == "2024-03-01"


def test_write_table_returns_its_metadata_block_and_leaves_no_temp_file(tmp_path: Path) -> None:
    columns = table_columns(list(range(FIRST_MONTH, FIRST_MONTH + 6)))
    spec = write_table(tmp_path / TABLE_FILE, columns, model="auto_ets")
    assert spec == TableSpec(TABLE_FILE, "auto_ets", FIRST_MONTH, FIRST_MONTH + 5, LEVELS)
    assert TableSpec.parse(json.loads(json.dumps(spec.to_dict())), "v0001") == spec
    assert [p.name for p in tmp_path.iterdir()] == [TABLE_FILE]
    schema = pq.read_schema(tmp_path / TABLE_FILE)
    assert [(f.name, str(f.type)) for f in schema][:4] == [
        ("store_id", "string"),
        ("product_id", "string"),
        ("period_index", "int32"),
        ("predicted_quantity", "double"),
    ]
    assert schema.names[4:] == ["lo_80", "hi_80", "lo_95", "hi_95"]


def test_lookup_finds_rows_and_tells_what_is_held(tmp_path: Path) -> None:
    columns = table_columns(list(range(FIRST_MONTH, FIRST_MONTH + 6)))
    write_table(tmp_path / TABLE_FILE, columns, model="m")
    table = ForecastTable.load(tmp_path / TABLE_FILE)
    rows = _rows(columns)[::-1]  # asked in another order than written
    found = table.lookup(*(list(c) for c in zip(*rows, strict=True)))
    assert found.found.all()
    assert found.predicted.tolist() == columns["predicted_quantity"][::-1].tolist()
    assert np.array_equal(found.lower["0.8"], columns["lo_80"][::-1], equal_nan=True)
    asked = table.lookup(
        ["s1", "s1", "s1", NOT_HELD[0], "s9", None],
        ["p1", "p1", "p1", NOT_HELD[1], "p1", "p1"],
        [FIRST_MONTH - 1, FIRST_MONTH + 6, FIRST_MONTH + 10**6, FIRST_MONTH, FIRST_MONTH, 0],
    )
    assert asked.found.tolist() == [False] * 6
    assert np.isnan(asked.predicted).all()
    assert asked.known_series.tolist() == [True, True, True, False, False, False]
    assert asked.known_store.tolist() == [True, True, True, True, False, False]
    assert asked.known_product.tolist() == [True] * 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("period_index"), r"columns \['period_index'\] missing"),
        (lambda c: c.pop("hi_95"), r"levels \['0.95'\] lack a lo_ or hi_ column"),
        (lambda c: c["predicted_quantity"].__setitem__(2, -1.0), "row 2 predicts -1.0"),
        (lambda c: c["predicted_quantity"].__setitem__(0, np.nan), "row 0 predicts nan"),
        (lambda c: c["period_index"].__setitem__(1, FIRST_MONTH), "repeats store 's1'"),
        (lambda c: c["lo_95"].__setitem__(3, 1e9), "row 3, level 0.95: lo > hi"),
        (lambda c: c["store_id"].__setitem__(0, None), r"nulls in columns \['store_id'\]"),
    ],
)
def test_write_table_refuses_a_table_that_breaks_the_contract(
    tmp_path: Path, change: Any, message: str
) -> None:
    columns = table_columns(list(range(FIRST_MONTH, FIRST_MONTH + 6)))
    change(columns)
    with pytest.raises(ModelError, match=message):
        write_table(tmp_path / TABLE_FILE, columns, model="m")
    assert not list(tmp_path.iterdir())


def test_a_malformed_metadata_block_is_refused(registry: ModelRegistry) -> None:
    version, _ = publish_table_version(registry)
    block = version.metadata["forecast_table"]
    for bad in ({**block, "file": "../x.parquet"}, {**block, "levels": ["80"]}, {"file": "f"}):
        broken = ModelVersion(
            version.version, version.path, {**version.metadata, "forecast_table": bad}, True
        )
        with pytest.raises(ModelError, match="forecast_table"):
            ModelFacts.of(broken)
    wrong = {**block, "last_period_index": block["last_period_index"] + 1}
    with pytest.raises(ModelError, match="its metadata says"):
        ServedModel.load(
            ModelVersion(
                version.version, version.path, {**version.metadata, "forecast_table": wrong}, True
            )
        )


def test_a_table_version_without_fallback_means_is_refused(registry: ModelRegistry) -> None:
    version, _ = publish_table_version(registry, fallback=None)
    with pytest.raises(ModelError, match="no fallback means"):
        ServedModel.load(version)


# --- answers -------------------------------------------------------------------------------


def test_held_rows_are_answered_with_the_tables_numbers_exactly(
    month_version: tuple[ModelVersion, dict[str, Any]],
) -> None:
    version, columns = month_version
    assert not (version.path / "pipeline").exists()
    served = ServedModel.load(version)
    assert served.forecaster is None and served.facts.levels == LEVELS
    rows = _rows(columns)
    years, months = zip(*(_month(r[2]) for r in rows), strict=True)
    scored = served.score([r[0] for r in rows], [r[1] for r in rows], years, months)
    assert scored.basis.tolist() == ["model"] * len(rows)
    assert scored.predicted.tolist() == columns["predicted_quantity"].tolist()
    for level, (lo, hi) in {"0.8": ("lo_80", "hi_80"), "0.95": ("lo_95", "hi_95")}.items():
        assert np.array_equal(scored.lower[level], columns[lo], equal_nan=True)
        assert scored.upper[level].tolist() == columns[hi].tolist()
    assert not scored.clipped.any() and not scored.unknown_store.any()


def test_outside_the_horizon_is_flagged_and_unknown_ids_fall_back(
    month_version: tuple[ModelVersion, dict[str, Any]],
) -> None:
    served = ServedModel.load(month_version[0])
    cases = [  # store, product, (year, month), basis, predicted
        ("s1", "p1", (2023, 12), "outside_horizon", None),
        ("s1", "p2", (2024, 7), "outside_horizon", None),
        (*NOT_HELD, (2024, 2), "store_mean", FALLBACK["store_mean"]["s2"]),
        ("s9", "p1", (2024, 2), "product_mean", FALLBACK["product_mean"]["p1"]),
        ("s1", "p9", (2024, 2), "store_mean", FALLBACK["store_mean"]["s1"]),
        ("s9", "p9", (2030, 1), "global_mean", FALLBACK["global_mean"]),
    ]
    scored = served.score(
        [c[0] for c in cases],
        [c[1] for c in cases],
        [c[2][0] for c in cases],
        [c[2][1] for c in cases],
    )
    assert scored.basis.tolist() == [c[3] for c in cases]
    got = [None if math.isnan(v) else v for v in scored.predicted.tolist()]
    assert got == [c[4] for c in cases]
    for level in LEVELS:
        assert np.isnan(scored.lower[level]).all() and np.isnan(scored.upper[level]).all()
    assert scored.unknown_store.tolist() == [False, False, False, True, False, True]
    assert scored.unknown_product.tolist() == [False, False, False, False, True, True]


def test_fallback_answers_keep_the_month_profile_and_carry_an_interval(tmp_path: Path) -> None:
    version, _ = publish_table_version(
        ModelRegistry(tmp_path / "models"), fallback=FALLBACK_PROFILES
    )
    served = ServedModel.load(version)
    cases = [  # store, product, (year, month), basis, predicted, spread (None: no interval)
        ("s9", "p1", (2024, 2), "product_mean", 36.0, 6.0),
        (*NOT_HELD, (2024, 2), "store_mean", FALLBACK["store_mean"]["s2"], None),
        ("s1", "p9", (2024, 2), "store_mean", 22.0, None),
        ("s9", "p9", (2030, 1), "global_mean", 19.0, 8.0),
        ("s9", "p9", (2030, 3), "global_mean", 21.0, None),
        ("s9", "p9", (2030, 5), "global_mean", FALLBACK["global_mean"], None),
    ]
    scored = served.score(
        [c[0] for c in cases],
        [c[1] for c in cases],
        [c[2][0] for c in cases],
        [c[2][1] for c in cases],
    )
    assert scored.basis.tolist() == [c[3] for c in cases]
    assert scored.predicted.tolist() == [c[4] for c in cases]
    for level, z in (("0.8", 1.2815515655446004), ("0.95", 1.959963984540054)):
        for i, (*_, value, spread) in enumerate(cases):
            if spread is None:
                assert np.isnan(scored.lower[level][i]) and np.isnan(scored.upper[level][i])
                continue
            assert scored.lower[level][i] == pytest.approx(max(value - z * spread, 0.0))
            assert scored.upper[level][i] == pytest.approx(value + z * spread)


def test_the_service_answers_from_the_table_in_json(
    month_version: tuple[ModelVersion, dict[str, Any]], registry: ModelRegistry
) -> None:
    _, columns = month_version
    service = ForecastService(registry)
    batch = service.forecast(
        [Query("s1", "p1", "2024-01"), Query("s1", "p1", "2024-07"), Query("s9", "p9", "2024-01")]
    )
    body = json.loads(json.dumps(batch.to_dict(), allow_nan=False))
    held, outside, unknown = body["answers"]
    assert held["predicted_quantity"] == columns["predicted_quantity"][0]
    assert held["basis"] == "model"
    assert held["intervals"]["0.95"] == [columns["lo_95"][0], columns["hi_95"][0]]
    assert outside["basis"] == "outside_horizon" and outside["predicted_quantity"] is None
    assert outside["intervals"] == {"0.8": [None, None], "0.95": [None, None]}
    assert unknown["basis"] == "global_mean"
    assert body["lineage"]["forecast_table"] == {
        "model": "auto_ets",
        "horizon": "2024-01 to 2024-06",
    }
    assert any("answers 2024-01 to 2024-06 from its forecast table" in n for n in body["notes"])
    assert service.forecast([Query("s1", "p1", "2024-02")]).notes == []


def test_a_day_table_answers_dates(registry: ModelRegistry) -> None:
    publish_table_version(registry, granularity="day")
    service = ForecastService(registry)
    day = FIRST_DAY + timedelta(days=3)
    batch = service.forecast([Query("s1", "p1", day.isoformat()), Query("s1", "p1", "2024-04-30")])
    assert batch.granularity == "day"
    assert [a.basis for a in batch.answers] == ["model", "outside_horizon"]
    assert (
        batch.answers[0].predicted_quantity == table_columns(day_periods())["predicted_quantity"][3]
    )
    with pytest.raises(InputError, match="day model"):
        service.forecast([Query("s1", "p1", "2024-03")], batch.model_version)


def test_a_csv_is_answered_from_the_table(
    month_version: tuple[ModelVersion, dict[str, Any]], registry: ModelRegistry, tmp_path: Path
) -> None:
    _, columns = month_version
    source = tmp_path / "sales.csv"
    lines = [("s1", "p1", "2024-01-05", "3"), ("s1", "p1", "2024-01-20", "4")]
    lines += [("s1", "p1", "2024-09-01", "5"), ("s9", "p2", "2024-02-01", "")]
    source.write_text(
        "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
        + "".join(f"{p},name,1.0,{s},store,{q},{d}\n" for s, p, d, q in lines)
    )
    result = predict_csv(ForecastService(registry), source)
    by_period = {(r["store_id"], r["period"]): r for r in result.rows}
    held = by_period[("s1", "2024-01")]
    assert held["predicted_quantity"] == columns["predicted_quantity"][0]
    assert held["error"] == columns["predicted_quantity"][0] - 7
    outside = by_period[("s1", "2024-09")]
    assert (outside["basis"], outside["predicted_quantity"], outside["error"]) == (
        "outside_horizon",
        None,
        None,
    )
    assert by_period[("s9", "2024-02")]["basis"] == "product_mean"
    assert any("not extrapolated" in n for n in result.notes)
    written = result.write_csv(tmp_path / "out.csv").read_text().splitlines()
    assert written[2].startswith(
        "s1,p1,2024,9,2024-09,,,,,,outside_horizon,false,5.0,,false,false,"
    )
