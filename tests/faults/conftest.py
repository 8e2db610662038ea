"""Helpers of the fault suite: the broker's real process, independent Kafka clients, outbox reads.

`fault_system` is one running system (tests/fixtures/system.py) shared by the broker, upload and
predict-load fault modules. The helpers let a fault test reach behind the services' backs: signal the Tansu
process itself (the "broker" child is a Python wrapper that started Tansu in its own session, so a
signal to the wrapper never reaches the broker), read a topic with a group of its own, publish with
a producer of its own, move the consumer group's offsets, and read the upload service's outbox.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from salesflow.config import Settings
from salesflow.services.upload.app import DB_FILE
from tests.fixtures.system import System, running_system

#: Training settings that keep every fault test's models cheap: 3 trees instead of 20, one backtest
#: window instead of three, and a holdout of that one window's 3 months (a 6-month holdout is not
#: made of whole windows then, and costs a fit of its own: warm trainings 6.5 -> 4 s).
#: Fault tests are about the pipeline, not model quality: every new version is activated.
CHEAP: dict[str, Any] = {
    "num_trees": 3,
    "promotion_gate": False,
    "backtest_windows": 1,
    "holdout_months": 3,
}
#: A reader stops once the topic has been silent this long after its last record.
READ_IDLE_S = 3.0
#: librdkafka needs a few seconds to join a fresh group on the local broker (see settings).
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Record:
    """One Kafka record as an independent reader saw it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def broker_pid(system: System) -> int:
    """The pid of the Tansu process started by the "broker" child (its wrapper's only child)."""
    wrapper = system.stack.child("broker").process
    assert wrapper is not None and wrapper.poll() is None, "the broker child is not running"
    children = _children_of(wrapper.pid)
    assert len(children) == 1, f"expected one Tansu process under {wrapper.pid}, got {children}"
    return children[0]


def _children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (read from /proc; Linux only, like the rest of the suite)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name (2nd field) is in parentheses and may hold spaces: split after it.
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill_broker(system: System) -> None:
    """SIGKILL the Tansu process and its wrapper: a crash, everything in memory is lost."""
    pid = broker_pid(system)
    child = system.stack.child("broker")
    assert child.process is not None
    os.kill(pid, signal.SIGKILL)
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(timeout=10)
    _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError):
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                return  # a zombie waiting for its (killed) parent's reaper: already dead
        assert time.monotonic() < deadline, f"process {pid} still alive after SIGKILL"
        time.sleep(0.05)


@contextlib.contextmanager
def broker_paused(system: System) -> Iterator[None]:
    """SIGSTOP the Tansu process for the block (its port stays open, nothing answers)."""
    pid = broker_pid(system)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    expect: int = 0,
    timeout: float = READ_TIMEOUT_S,
    idle: float = READ_IDLE_S,
) -> list[Record]:
    """Every record of `topic` from the start, read with a fresh group (commits nothing).

    Reads until at least `expect` records arrived and the topic then stayed silent for `idle`
    seconds, or until `timeout`; the caller asserts on what came back.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"fault-reader-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "partition.assignment.strategy": "range",
        }
    )
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.25)
            if msg is None or msg.error():
                if len(records) >= expect and records and time.monotonic() - last > idle:
                    break
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            records.append(Record(partition, offset, msg.key(), msg.value()))
            last = time.monotonic()
    finally:
        consumer.close()
    return records


def topic_end(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark: the offset the next record will get."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "fault-watermarks"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def producer(settings: Settings, **config: Any) -> Producer:
    """A producer of the test's own (not salesflow's config), e.g. one that batches records."""
    return Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, **config})


def produce_all(client: Producer, topic: str, items: list[tuple[str | None, bytes]]) -> None:
    """Produce (key, value) pairs and wait until every one is delivered."""
    failures: list[str] = []

    def report(error: Any, _msg: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in items:
        client.produce(
            topic, key=None if key is None else key.encode(), value=value, on_delivery=report
        )
    assert client.flush(15) == 0, "events not delivered within 15 s"
    assert not failures, failures


def outbox_rows(system: System, upload_id: str | None = None) -> list[dict[str, Any]]:
    """The upload service's outbox rows (read-only connection; the service keeps writing)."""
    path = system.settings.data_dir / DB_FILE
    uri = f"file:{path}?mode=ro"
    where, params = ("WHERE upload_id = ?", (upload_id,)) if upload_id else ("", ())
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT id, upload_id, payload, created_at, published_at, attempts, last_error "
            "FROM outbox "
            f"{where} ORDER BY id",
            params,
        ).fetchall()
    return [dict(row) for row in rows]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` every 0.2 s until it is true; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout:.0f} s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="package")
def fault_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One system (file:// store, cheap models) for the broker, upload and predict-load modules.

    A start costs ~15-30 s and the job server's first model ~3x a warm one, so the modules
    share it; each of their tests takes it through `made_whole` and leaves it working.
    """
    with running_system(tmp_path_factory.mktemp("faults"), **CHEAP) as running:
        yield running


def made_whole(system: System) -> System:
    """The system with every child running again (a failed test may have left one stopped)."""
    for child in list(system.stack.children):
        if not child.alive():
            system.stack.restart(child.name)
    return system


def skip_to_end(settings: Settings) -> None:
    """Commit the consumer group's offsets at the end of the uploads topic (its consumer must be
    stopped): whatever waits there is never handled."""
    topic = settings.kafka_uploads_topic
    ends = topic_end(settings, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": settings.kafka_consumer_group,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, end) for p, end in ends.items()], asynchronous=False
        )
    finally:
        consumer.close()
