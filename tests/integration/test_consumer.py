"""The upload consumer's loop against the real local broker: dead letters, commits, retries, stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from salesflow.config import Settings
from salesflow.errors import UnavailableError
from salesflow.faults import EXIT_CODE
from salesflow.kafka import (
    EventPublisher,
    LocalBroker,
    admin_config,
    consumer_config,
    consumer_lag,
)
from salesflow.sales.contract import UploadEvent, new_upload_id, upload_key
from salesflow.services.consumer.handler import (
    DeadLetter,
    Done,
    Outcome,
    Retry,
    UploadHandler,
)
from salesflow.services.consumer.worker import consume
from salesflow.storage import store_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: A new group's first message takes ~3 s on Tansu with a 6 s session timeout; allow slack.
FIRST_MESSAGE_S = 20.0
BODY = (
    b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"
    b"1,Widget,2.50,10,North,3,2024-01-05\n"
)


class StubJobs:
    """The job server client's `train`, recording calls (thread-safe enough: one writer)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str | None]] = []

    def train(self, upload_id: str, sha256: str | None, mode: str | None = None) -> dict[str, Any]:
        self.calls.append((upload_id, sha256))
        if self.error is not None:
            raise self.error
        return {"job_id": f"job-{upload_id[:8]}", "upload_id": upload_id, "created": True}


class StubUploads:
    """The upload client's `report_status`, recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def report_status(self, upload_id: str, status: str, **fields: Any) -> dict[str, Any]:
        self.calls.append((upload_id, status, fields))
        return {"upload_id": upload_id, "status": status}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running_worker(settings: Settings, handler: Any) -> Iterator[threading.Event]:
    """`consume` in a thread; stops it on exit and asserts it exits promptly and cleanly."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            consume(settings, handler, stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name="consumer-under-test", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive(), "the worker did not stop"
    assert not failures, failures


def publish(settings: Settings, *values: tuple[str, bytes]) -> None:
    publisher = EventPublisher(settings)
    try:
        for key, value in values:
            publisher.publish(settings.kafka_uploads_topic, key, value)
    finally:
        publisher.close()


def stored_event(settings: Settings) -> UploadEvent:
    upload_id = new_upload_id()
    info = store_for(settings).put(upload_key(upload_id), [BODY])
    assert info.sha256 is not None
    return UploadEvent(upload_id, info.url, info.size, info.sha256, "s.csv", "2024-03-01T12:00:00Z")


def read_topic(settings: Settings, topic: str, count: int, timeout: float) -> list[Message]:
    """Up to `count` records of `topic`, read by an independent consumer group."""
    reader = Consumer(consumer_config(settings, group_id=f"reader-{uuid.uuid4().hex}"))
    reader.subscribe([topic])
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < count and time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None:
                received.append(msg)
    finally:
        reader.close()
    return received


def topic_size(settings: Settings, topic: str) -> int:
    """Records in partition 0 of `topic` (its high watermark)."""
    probe = Consumer(consumer_config(settings, group_id=f"probe-{uuid.uuid4().hex}"))
    try:
        _low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=5.0)
    finally:
        probe.close()
    return int(high)


def topics_exist(settings: Settings) -> bool:
    """Both of the consumer's topics exist on the broker."""
    metadata = AdminClient(admin_config(settings)).list_topics(timeout=5.0)
    wanted = {settings.kafka_uploads_topic, settings.kafka_dlq_topic}
    return wanted <= {name for name, t in metadata.topics.items() if t.error is None}


def lag(settings: Settings) -> int | None:
    return consumer_lag(settings, timeout=5.0)


def test_poison_is_dead_lettered_and_valid_events_handled_once(kafka_settings: Settings) -> None:
    settings = kafka_settings
    first, second = stored_event(settings), stored_event(settings)
    publish(
        settings,
        (first.upload_id, first.to_json()),
        ("poison", b"{not json"),
        (second.upload_id, second.to_json()),
    )
    jobs, uploads = StubJobs(), StubUploads()
    handler = UploadHandler(settings, store_for(settings), jobs, uploads, report_delays=())

    with running_worker(settings, handler):
        wait_for(lambda: len(jobs.calls) == 2, FIRST_MESSAGE_S, "both valid events")
        wait_for(lambda: lag(settings) == 0, 10, "all three offsets committed")
        dead = read_topic(settings, settings.kafka_dlq_topic, 1, timeout=FIRST_MESSAGE_S)
    handler.close()

    assert jobs.calls == [(first.upload_id, first.sha256), (second.upload_id, second.sha256)]
    assert topic_size(settings, settings.kafka_dlq_topic) == 1
    assert len(dead) == 1
    record = json.loads(dead[0].value() or b"")
    assert record["reason"] == "malformed_event"
    assert record["event"] == "{not json"
    assert record["upload_id"] is None
    assert record["schema_version"] == 1 and record["failed_at"].endswith("Z")
    assert sorted((c[0], c[1]) for c in uploads.calls) == sorted(
        [(first.upload_id, "queued"), (second.upload_id, "queued")]
    )
    # A new member of the same group gets nothing: every offset was committed.
    assert read_topic_as_group(settings, timeout=3.0) == []


def read_topic_as_group(settings: Settings, timeout: float) -> list[Message]:
    """What a new consumer in the worker's own group receives within `timeout` of joining."""
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.kafka_uploads_topic])
    received: list[Message] = []
    try:
        deadline = time.monotonic() + FIRST_MESSAGE_S
        while not consumer.assignment() and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                received.append(msg)
        assert consumer.assignment(), "the new member was never assigned a partition"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                received.append(msg)
    finally:
        consumer.close()
    return received


class FlakyHandler:
    """Retry `failures` times for the first event, then Done; records the group's lag per call."""

    def __init__(self, settings: Settings, failures: int) -> None:
        self.settings = settings
        self.failures = failures
        self.seen: list[str] = []
        self.lag_seen: list[int | None] = []
        self.outcomes: list[Outcome] = []

    def handle(self, value: bytes | None) -> Outcome:
        event = UploadEvent.from_json(value)
        self.seen.append(event.upload_id)
        self.lag_seen.append(lag(self.settings))
        outcome: Outcome = Done(event.upload_id, "job")
        if self.seen.count(event.upload_id) <= self.failures and len(set(self.seen)) == 1:
            outcome = Retry("job_server_unavailable", "down for the test")
        self.outcomes.append(outcome)
        return outcome

    def give_up(self, value: bytes | None, last: Retry) -> DeadLetter:
        raise AssertionError("must not give up within the test's give-up time")


def test_retry_holds_the_commit_until_done(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(
        update={"consumer_backoff_initial_s": 0.3, "consumer_backoff_max_s": 0.5}
    )
    first, second = stored_event(settings), stored_event(settings)
    publish(settings, (first.upload_id, first.to_json()), (second.upload_id, second.to_json()))
    handler = FlakyHandler(settings, failures=2)

    with running_worker(settings, handler):
        wait_for(lambda: len(handler.seen) == 4, FIRST_MESSAGE_S, "three tries and one event")
        wait_for(lambda: lag(settings) == 0, 10, "both offsets committed")
        time.sleep(1.0)  # nothing more may arrive: no duplicate after pause/resume

    assert handler.seen == [first.upload_id] * 3 + [second.upload_id]
    assert [type(o).__name__ for o in handler.outcomes] == ["Retry", "Retry", "Done", "Done"]
    # Nothing was committed while the first event was retried; the second saw the first committed.
    assert handler.lag_seen == [2, 2, 2, 1]


def test_endless_retry_gives_up_to_the_dead_letters(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(
        update={
            "consumer_backoff_initial_s": 0.2,
            "consumer_backoff_max_s": 0.4,
            "consumer_give_up_s": 1.5,
        }
    )
    event = stored_event(settings)
    publish(settings, (event.upload_id, event.to_json()))
    jobs, uploads = StubJobs(UnavailableError("connection refused")), StubUploads()
    handler = UploadHandler(settings, store_for(settings), jobs, uploads, report_delays=())

    with running_worker(settings, handler):
        dead = read_topic(settings, settings.kafka_dlq_topic, 1, timeout=FIRST_MESSAGE_S + 5)
        wait_for(lambda: lag(settings) == 0, 10, "the given-up event committed")
    handler.close()

    assert len(dead) == 1
    assert dead[0].key() == event.upload_id.encode()
    record = json.loads(dead[0].value() or b"")
    assert (record["reason"], record["upload_id"]) == ("job_server_unavailable", event.upload_id)
    assert json.loads(record["event"]) == event.to_dict()
    assert len(jobs.calls) >= 3  # retried with back-off before giving up
    assert uploads.calls[-1][:2] == (event.upload_id, "rejected")


class StuckHandler:
    """Always Retry; sets `called` on the first call."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.calls = 0

    def handle(self, value: bytes | None) -> Outcome:
        self.calls += 1
        self.called.set()
        return Retry("job_server_unavailable", "down for the test")

    def give_up(self, value: bytes | None, last: Retry) -> DeadLetter:
        raise AssertionError("must not give up")


def test_stop_abandons_the_retrying_event_uncommitted(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"consumer_backoff_initial_s": 30.0})
    event = stored_event(settings)
    publish(settings, (event.upload_id, event.to_json()))
    handler = StuckHandler()

    with running_worker(settings, handler) as stop:
        assert handler.called.wait(FIRST_MESSAGE_S)
        stopped_at = time.monotonic()
        stop.set()
    # running_worker joined the thread: it must have left its 30 s back-off at once.
    assert time.monotonic() - stopped_at < 3.0
    assert handler.calls == 1
    assert lag(settings) == 1  # abandoned, not committed: the next consumer gets it again


def test_consumer_recreates_topics_after_a_broker_restart(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:12]
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=own_broker.bootstrap,
        kafka_uploads_topic=f"sales.uploads.{suffix}",
        kafka_dlq_topic=f"sales.uploads.{suffix}.dlq",
        kafka_consumer_group=f"salesflow-test-{suffix}",
        _env_file=None,
    )
    before, after = stored_event(settings), stored_event(settings)
    jobs = StubJobs()
    handler = UploadHandler(settings, store_for(settings), jobs, StubUploads(), report_delays=())

    with running_worker(settings, handler):
        publish(settings, (before.upload_id, before.to_json()))
        wait_for(lambda: len(jobs.calls) == 1, FIRST_MESSAGE_S, "the event before the restart")
        own_broker.restart()  # in memory: topics, offsets and the group are gone
        # The consumer itself puts its topics back (nobody else touches the broker meanwhile).
        wait_for(lambda: topics_exist(settings), 45, "the consumer to re-create its topics")
        publish(settings, (after.upload_id, after.to_json()))
        wait_for(lambda: len(jobs.calls) >= 2, 45, "the event after the restart")
    handler.close()

    assert jobs.calls[-1][0] == after.upload_id


CRASH_SCRIPT = """
import sys, threading
from salesflow.config import Settings
from salesflow.services.consumer.handler import Done
from salesflow.services.consumer.worker import consume

class Handler:
    def handle(self, value):
        print("HANDLED", flush=True)
        return Done("x" * 32, "job")
    def give_up(self, value, last):
        raise AssertionError

settings = Settings.model_validate_json(sys.stdin.read())
consume(settings, Handler(), threading.Event())
"""


def test_crash_after_train_leaves_the_event_uncommitted(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"crash_point": "consumer.after_train"})
    event = stored_event(settings)
    publish(settings, (event.upload_id, event.to_json()))

    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT],
        input=settings.model_dump_json(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert done.returncode == EXIT_CODE, done.stderr[-2000:]
    assert done.stdout.count("HANDLED") == 1
    assert lag(settings) == 1


RUN_SCRIPT = """
import sys
from salesflow.config import Settings
from salesflow.services.consumer.worker import run

run(Settings.model_validate_json(sys.stdin.read()))
print("RETURNED", flush=True)
"""


def test_run_stops_cleanly_on_sigterm(kafka_settings: Settings) -> None:
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin and process.stdout and process.stderr
        stderr = process.stderr
        reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
        reader.start()
        try:
            process.stdin.write(kafka_settings.model_dump_json())
            process.stdin.close()
            wait_for(lambda: any("consuming" in line for line in lines), 30, "the consumer start")
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(15)
            took = time.monotonic() - stopped_at
            out = process.stdout.read()
            reader.join(5)
        finally:
            if process.poll() is None:
                process.kill()

    assert code == 0, "".join(lines)[-2000:]
    assert took < 5.0
    assert "RETURNED" in out
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(entry["msg"] == "upload consumer stopped" for entry in logged)
    assert all(entry["service"] == "consumer" for entry in logged)
