"""The Spark options salesflow starts its session with (no JVM needed: spark_conf is a pure mapping)."""

from __future__ import annotations

from pathlib import Path

from salesflow.config import Settings
from salesflow.spark.session import spark_conf

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
