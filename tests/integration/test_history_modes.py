"""The overlap policy on real Spark: what a later upload does to the (store, day) cells the curated
history holds (replace, append, reject), the same rows re-shaped, a corrected re-export, and
taking an upload back out: curation only, on a few tiny files. Then `train --only` and the
counts a version records of the history it was trained on (small fits)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.errors import InputError, OverlapError
from salesflow.registry import ModelRegistry
from salesflow.sales import ledger, names
from salesflow.sales.contract import REQUIRED_COLUMNS
from salesflow.sales.generate import generate_sales
from salesflow.serving.history import read_daily, read_monthly
from salesflow.spark.curate import TrainInput, curate
from salesflow.spark.train import train
from salesflow.spark.train_context import SourceStats, TrainOptions, TrainRun
from tests.fixtures.data import sale, write_sales

pytestmark = pytest.mark.slow

#: Two stores x two products x three days in January 2021: 12 rows, quantity = day + store no.
ROWS = [
    sale(str(day + int(store[1])), f"2021-01-0{day}", store, product)
    for store in ("s1", "s2")
    for product in ("p1", "p2")
    for day in (1, 2, 3)
]


def _run(spark: SparkSession, settings: Settings) -> TrainRun:
    registry = ModelRegistry(settings.warehouse_path / "models")
    return TrainRun(spark, settings, registry, lambda _stage: None, TrainOptions())


def _add(
    spark: SparkSession, settings: Settings, path: Path, mode: str | None = None, upload: str = ""
) -> SourceStats:
    item = TrainInput(path.as_uri(), upload_id=upload or None, mode=mode)
    return curate(_run(spark, settings), [item])[0]


def _days(settings: Settings, store: str = "all") -> dict[str, float]:
    history = read_daily(settings.warehouse_path / "curated" / "daily", store)
    return {d: q for d, q in zip(history.dates, history.quantities, strict=True) if q}


def _total(settings: Settings) -> float:
    return sum(read_monthly(settings.warehouse_path / "curated" / "monthly").quantities)


def _book(settings: Settings) -> ledger.Ledger:
    return ledger.load(settings.warehouse_path / "curated")


def _original(tmp_path: Path, spark: SparkSession, settings: Settings) -> SourceStats:
    return _add(spark, settings, write_sales(tmp_path / "jan.csv", ROWS), upload="a" * 32)


BASE_TOTAL = float(sum(int(r[5]) for r in ROWS))  # 2 products x (s1: 2+3+4, s2: 3+4+5) = 42


def test_the_same_rows_reshaped_replace_and_never_double(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    _original(tmp_path, spark, settings)
    order = [5, 6, 3, 0, 1, 2, 4]  # quantity, date, store_id, product_id, ...
    reshaped = [
        [row[i] if i != 6 else f"{row[6]} 08:30:00" for i in order] for row in reversed(ROWS)
    ]
    other = write_sales(
        tmp_path / "jan.tsv",
        reshaped,
        columns=[REQUIRED_COLUMNS[i] for i in order],
        sep="\t",
        newline="\r\n",
        bom=True,
    )
    stats = _add(spark, settings, other, upload="b" * 32)
    assert stats.appended and stats.mode == "replace"
    assert _total(settings) == BASE_TOTAL
    [overlap] = stats.overlaps
    assert overlap["upload"] == "a" * 32 and overlap["action"] == "replaced"
    assert (overlap["rows"], overlap["cells"], overlap["stores"]) == (12, 6, ["s1", "s2"])
    assert (overlap["first_date"], overlap["last_date"]) == ("2021-01-01", "2021-01-03")
    first, second = _book(settings).entries
    assert (first.status, first.rows, first.parts) == ("superseded", 0, {})
    assert first.superseded[0].by == "b" * 32
    assert (second.status, second.rows) == ("live", 12)


def test_a_corrected_day_replaces_only_its_store_and_day(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    _original(tmp_path, spark, settings)
    before = _days(settings, "s2")
    fix = [sale("10", "2021-01-02", "s1", "p1")]  # p2's sale that day was returned: not listed
    stats = _add(spark, settings, write_sales(tmp_path / "fix.csv", fix))
    assert [(o["rows"], o["cells"]) for o in stats.overlaps] == [(2, 1)]
    assert _days(settings, "s1") == {"2021-01-01": 4.0, "2021-01-02": 10.0, "2021-01-03": 8.0}
    assert _days(settings, "s2") == before  # another store's same day is untouched
    first, second = _book(settings).entries
    assert first.status == "partly superseded" and first.rows == 10
    kept = names.load(settings.warehouse_path / "curated")  # the names dimension beside it
    assert (kept.stores["s2"].name, kept.stores["s2"].seen) == ("store s2", "2021-01-03")
    assert sorted(kept.products) == ["p1", "p2"] and kept.products["p1"].name == "name p1"
    assert second.id == stats.sha256[:16] and second.rows == 1
    # The same correction again changes nothing: the file is in the history already.
    again = _add(spark, settings, write_sales(tmp_path / "fix-again.csv", fix))
    assert again.appended is False and len(_book(settings).entries) == 2


def test_append_adds_and_reject_refuses_naming_the_overlap(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    _original(tmp_path, spark, settings)
    more = [sale("1", "2021-01-03", "s2", "p2"), sale("5", "2021-01-04", "s2", "p2")]
    appended = _add(spark, settings, write_sales(tmp_path / "inc.csv", more), "append")
    assert [o["action"] for o in appended.overlaps] == ["added to"]
    assert _total(settings) == BASE_TOTAL + 6
    late = [sale("7", "2021-01-04", "s2", "p1"), sale("2", "2021-02-01", "s1", "p1")]
    with pytest.raises(OverlapError, match=r"late\.csv overlaps .* \(stores s2, 2021-01-04 to"):
        _add(spark, settings, write_sales(tmp_path / "late.csv", late), "reject")
    assert _total(settings) == BASE_TOTAL + 6 and len(_book(settings).entries) == 2
    fresh = [sale("2", "2021-02-01", "s1", "p1")]
    _add(spark, settings, write_sales(tmp_path / "feb.csv", fresh), "reject")  # no overlap
    assert _total(settings) == BASE_TOTAL + 8


def test_remove_takes_an_uploads_rows_out_and_records_why(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    _original(tmp_path, spark, settings)
    extra = _add(spark, settings, write_sales(tmp_path / "feb.csv", [sale("9", "2021-02-03")]))
    curated = settings.warehouse_path / "curated"
    removed = ledger.remove(curated, extra.sha256[:10], "tester", "wrong store")
    assert removed.removed is not None and removed.removed["reason"] == "wrong store"
    assert _total(settings) == BASE_TOTAL
    entry = _book(settings).find(extra.sha256[:16])
    assert entry.status == "removed" and entry.removed == removed.removed
    assert not list((curated / "daily").glob(f"source_sha256={extra.sha256}*"))
    # Removed, the same file may come back.
    assert _add(spark, settings, tmp_path / "feb.csv").appended
    assert _total(settings) == BASE_TOTAL + 9


def _names(folders: Sequence[Path]) -> list[str]:
    return sorted(f.name for f in folders)


def test_folders_written_without_the_ledger_are_never_read(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    """What a writer that dies before replacing the ledger leaves: invisible, then swept."""
    _original(tmp_path, spark, settings)
    curated = settings.warehouse_path / "curated"
    live = _names(ledger.live_folders(curated / "daily"))
    stray = curated / "daily" / "source_sha256=deadbeef"
    stray.mkdir()
    for part in (curated / "daily" / live[0]).glob("*.parquet"):
        (stray / part.name).write_bytes(part.read_bytes())
    assert _total(settings) == BASE_TOTAL
    assert sum(_days(settings).values()) == BASE_TOTAL
    with ledger.locked(curated) as book:
        ledger.sweep(curated, book)
    assert not stray.exists() and _names(ledger.live_folders(curated / "daily")) == live


def test_train_only_leaves_the_history_alone_and_counts_what_a_version_saw(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", num_trees=3, _env_file=None)
    registry = ModelRegistry(settings.warehouse_path / "models")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    generate_sales(one, rows=1_500, seed=1)
    generate_sales(two, rows=1_500, seed=2)
    alone = train(spark, settings, [TrainInput(str(one))], registry=registry, only=True)
    assert alone.rows_read == 1_500 and alone.inputs[0]["mode"] == "append"
    assert _book(settings).entries == []
    assert not list(settings.warehouse_path.glob(".only-*"))  # its own history is gone
    with pytest.raises(InputError, match="no accepted rows"):
        train(spark, settings, [], registry=registry)  # the history alone: empty
    inputs = [TrainInput(str(one)), TrainInput(str(two), mode="append")]
    both = train(spark, settings, inputs, registry=registry)
    meta = registry.get(both.version).metadata
    assert meta["trained_on"]["uploads"] == 2
    assert meta["trained_on"]["rows"] == sum(e.rows for e in _book(settings).entries)
    assert registry.get(alone.version).metadata["trained_on"]["uploads"] == 1
