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
