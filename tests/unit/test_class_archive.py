"""The class archive's plan: map an existing archive, else record one, one recorder at a time.

No JVM here: tests/integration/test_class_archive.py records and maps a real one.
"""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import pytest

from salesflow.config import Settings
from salesflow.spark import class_archive
from salesflow.spark.session import spark_conf


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        spark_class_archive_dir=tmp_path / "archive",
        _env_file=None,
        **overrides,
    )


def test_without_an_archive_one_process_records_and_the_others_start_plain(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    first = class_archive.plan(settings)
    assert first.recording is not None and first.archive is not None
    assert first.java_option.startswith(f"-XX:ArchiveClassesAtExit={first.recording} ")
    assert first.recording.parent == first.archive.parent == tmp_path / "archive"
    assert str(os.getpid()) in first.recording.name  # two recorders never share a file
    second = class_archive.plan(settings)  # the claim is taken: no second recording
    assert second.java_option == "" and second.recording is None


def test_an_existing_archive_is_mapped_quietly(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    archive = class_archive.plan(settings).archive
    assert archive is not None
    archive.write_bytes(b"published by a recorder that exited cleanly")
    mapped = class_archive.plan(settings)
    assert mapped.recording is None
    assert mapped.java_option == f"-XX:SharedArchiveFile={archive} -Xlog:cds*=off"
    conf = spark_conf(settings, mapped.java_option)
    derby = f"-Dderby.system.home={settings.data_dir / 'derby'}"
    assert conf["spark.driver.extraJavaOptions"] == f"{derby} {mapped.java_option}"


def test_a_stale_claim_is_taken_over_and_its_partial_recording_removed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = class_archive.plan(settings)
    assert first.recording is not None and first.archive is not None
    first.recording.write_bytes(b"half written by a recorder that was killed")
    claim = first.archive.with_name(first.archive.name + ".claim")
    old = time.time() - class_archive.CLAIM_STALE_S - 60
    os.utime(claim, (old, old))
    again = class_archive.plan(settings)
    assert again.recording is not None  # recorded anew
    assert not first.recording.exists()  # a partial recording is never published
    assert claim.exists() and time.time() - claim.stat().st_mtime < 60


def test_switched_off_or_another_classpath(tmp_path: Path) -> None:
    off = class_archive.plan(_settings(tmp_path, spark_class_archive=False))
    assert off == class_archive.ArchivePlan("")
    plain = class_archive.plan(_settings(tmp_path / "a"))
    extra = class_archive.plan(
        _settings(tmp_path / "a", spark_conf={"spark.driver.extraClassPath": "/opt/extra.jar"})
    )
    assert plain.archive is not None and extra.archive is not None
    assert plain.archive != extra.archive  # an archive only fits the classpath it was made on


def test_mapping_marks_an_archive_used_and_pruning_keeps_the_most_recently_used(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    folder = tmp_path / "archive"
    folder.mkdir()
    others = [folder / f"spark-driver-4.0.0-{n:012d}.jsa" for n in range(5)]
    for age, path in enumerate(others):  # others[0] used most recently
        path.write_bytes(b"an archive of another installation")
        then = time.time() - 3600 * (age + 1)
        os.utime(path, (then, then))
    ours = class_archive.archive_path(settings)
    ours.write_bytes(b"this installation's archive")
    os.utime(ours, (time.time() - 86400, time.time() - 86400))
    class_archive.plan(settings)  # maps it: its last use is now
    assert time.time() - ours.stat().st_mtime < 60
    class_archive.prune(ours)
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted([ours.name, *(p.name for p in others[: class_archive.KEEP_OTHERS])])


def test_record_keeps_an_existing_archive_and_respects_the_switch(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    archive = class_archive.archive_path(settings)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"recorded earlier")
    assert class_archive.record(settings) == archive  # no new training, nothing rewritten
    assert archive.read_bytes() == b"recorded earlier"
    assert class_archive.record(_settings(tmp_path, spark_class_archive=False)) is None


def test_a_reinstalled_spark_at_the_same_path_gets_a_new_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JVM refuses an archive whose classpath jars changed size or mtime: a venv reinstalled
    in place must make a new key, or the refused archive would never be recorded again."""
    package = tmp_path / "site-packages" / "pyspark"
    (package / "jars").mkdir(parents=True)
    jar = package / "jars" / "spark-core.jar"
    jar.write_bytes(b"classes")
    fake = types.SimpleNamespace(__file__=str(package / "__init__.py"), __version__="4.3.0")
    monkeypatch.setattr(class_archive, "pyspark", fake)
    settings = _settings(tmp_path)
    before = class_archive.archive_path(settings)
    assert class_archive.archive_path(settings) == before  # stable while nothing changes
    os.utime(jar, ns=(time.time_ns(), time.time_ns() + 10**9))  # reinstalled: a new mtime
    assert class_archive.archive_path(settings) != before
