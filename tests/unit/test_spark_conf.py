"""The Spark options salesflow starts its session with (no JVM needed: spark_conf is a pure mapping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.config import Settings
from salesflow.spark.session import (
    CODEGEN_CACHE_ENTRIES,
    QUICK_JIT,
    QUICK_JIT_MAX_BYTES,
    input_bytes,
    input_categories,
    jit_option,
    spark_conf,
)

JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def test_user_options_win_and_jvm_options_are_added_not_replaced(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        _env_file=None,
        spark_conf={JAVA_OPTIONS: "-XX:+UseSerialGC", "spark.sql.shuffle.partitions": "8"},
    )
    conf = spark_conf(settings)
    assert conf["spark.sql.shuffle.partitions"] == "8"  # the user's value replaces salesflow's
    derby = f"-Dderby.system.home={tmp_path / 'derby'}"
    assert conf[JAVA_OPTIONS] == f"{derby} -XX:+UseSerialGC"  # salesflow's first: a later -D wins


def test_defaults_bind_loopback_and_keep_scratch_files_under_the_data_dir(tmp_path: Path) -> None:
    conf = spark_conf(Settings(data_dir=tmp_path, _env_file=None))
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.local.dir"] == str(tmp_path / "spark-tmp")
    assert conf[JAVA_OPTIONS] == f"-Dderby.system.home={tmp_path / 'derby'}"


def test_the_generated_code_cache_holds_more_than_one_training(tmp_path: Path) -> None:
    conf = spark_conf(Settings(data_dir=tmp_path, _env_file=None))
    assert int(conf["spark.sql.codegen.cache.maxEntries"]) == CODEGEN_CACHE_ENTRIES > 100


@pytest.mark.parametrize(
    ("mode", "reads", "expected"),
    [
        ("auto", 2_000_000, QUICK_JIT),  # a small one-shot job
        ("auto", QUICK_JIT_MAX_BYTES, ""),  # a large one keeps C2 for its long scans
        ("auto", None, ""),  # a server, or sizes unknown (s3://)
        ("quick", None, QUICK_JIT),
        ("full", 1, ""),
    ],
)
def test_jit_option_follows_the_setting_and_the_job_size(
    tmp_path: Path, mode: str, reads: int | None, expected: str
) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None, spark_jit=mode)
    assert jit_option(settings, reads) == expected


def test_input_bytes_adds_local_files_and_gives_up_on_remote_or_missing_ones(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 5)
    assert input_bytes([str(a), b.as_uri()]) == 15
    assert input_bytes([str(a), "s3://bucket/key.csv"]) is None
    assert input_bytes([str(tmp_path / "missing.csv")]) is None


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        (None, QUICK_JIT),  # not sampled (prediction): the size decides
        (9, QUICK_JIT),  # the default 3 x 3 catalogue
        (32, QUICK_JIT),  # still within max_bins
        (33, ""),  # more bins per split in every forest fit: C2 pays off
        (2_000, ""),
    ],
)
def test_a_small_training_of_a_large_catalogue_keeps_the_full_jit(
    tmp_path: Path, categories: int | None, expected: str
) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None, spark_jit="auto")
    assert jit_option(settings, 2_000_000, categories) == expected


HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"


def _sales(path: Path, stores: int, products: int, rows: int) -> Path:
    lines = (
        f"p{i % products},name,1.5,s{i % stores},store,{i % 7},2024-01-{i % 28 + 1:02d}\n"
        for i in range(rows)
    )
    path.write_text(HEADER + "".join(lines))
    return path


def test_input_categories_samples_the_catalogue_of_local_sales_files(tmp_path: Path) -> None:
    small = _sales(tmp_path / "small.csv", 3, 3, 500)
    large = _sales(tmp_path / "large.csv", 40, 700, 5_000)
    assert input_categories([str(small)]) == 3
    assert input_categories([small.as_uri(), str(large)]) == 700  # the largest of the inputs
    bad = tmp_path / "bad.csv"
    bad.write_text("no,header,here\n1,2,3\n")
    assert input_categories([str(bad)]) is None  # the job itself will say what is wrong
    assert input_categories([str(small), "s3://bucket/key.csv"]) is None
    assert input_categories([str(tmp_path / "missing.csv")]) is None
