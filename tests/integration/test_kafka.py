"""Kafka edge against the real local broker over TCP: topics, publish/consume, at-least-once, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from salesflow.config import Settings
from salesflow.errors import ConfigurationError, UnavailableError
from salesflow.kafka import (
    EventPublisher,
    LocalBroker,
    admin_config,
    broker_reachable,
    consumer_config,
    consumer_lag,
    ensure_topics,
    producer_config,
    run_broker,
)
from salesflow.sales.contract import UploadEvent
from tests.conftest import free_port

# Every test here is bounded: a hang is a failure, not a stuck run.
pytestmark = pytest.mark.timeout(90)

#: A new group's first message takes ~3 s on Tansu with a 6 s session timeout; allow slack.
FIRST_MESSAGE_S = 15.0


def _settings_for(bootstrap: str, tmp_path: Path, **extra: object) -> Settings:
    suffix = uuid.uuid4().hex[:12]
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=bootstrap,
        kafka_uploads_topic=f"sales.uploads.{suffix}",
        kafka_dlq_topic=f"sales.uploads.{suffix}.dlq",
        kafka_consumer_group=f"salesflow-test-{suffix}",
        _env_file=None,
        **extra,
    )


@contextmanager
def _consumer(settings: Settings) -> Iterator[Consumer]:
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.kafka_uploads_topic])
    try:
        yield consumer
    finally:
        consumer.close()


def _receive(consumer: Consumer, count: int, timeout: float = FIRST_MESSAGE_S) -> list[Message]:
    """Poll until `count` messages arrived or `timeout` seconds passed."""
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            received.append(message)
    return received


def _commit(consumer: Consumer, message: Message) -> None:
    consumer.store_offsets(message=message)
    consumer.commit(asynchronous=False)


def _event() -> UploadEvent:
    return UploadEvent(
        upload_id=uuid.uuid4().hex,
        url="file:///tmp/objects/uploads/x.csv",
        size=123,
        sha256="ab" * 32,
        filename="sales.csv",
        uploaded_at="2024-01-31T12:00:00Z",
    )


def _topics(settings: Settings) -> set[str]:
    return set(AdminClient(admin_config(settings)).list_topics(timeout=5).topics)


def test_configs_are_accepted_by_librdkafka_and_passthrough_wins(settings: Settings) -> None:
    producer = producer_config(settings)
    assert producer["batch.num.messages"] == 1 and producer["linger.ms"] == 0
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert producer["delivery.timeout.ms"] == settings.kafka_delivery_timeout_ms
    consumer = consumer_config(settings, "group-x")
    assert consumer["group.id"] == "group-x"
    assert consumer["enable.auto.commit"] is False and consumer["enable.auto.offset.store"] is False
    assert consumer["heartbeat.interval.ms"] < consumer["session.timeout.ms"]
    # librdkafka rejects unknown or ill-typed properties at construction.
    Producer(producer).flush(0)
    Consumer(consumer).close()
    custom = settings.model_copy(update={"kafka_config": {"acks": "1", "client.id": "mine"}})
    assert producer_config(custom)["acks"] == "1"
    assert consumer_config(custom)["client.id"] == "mine"
    assert admin_config(custom)["client.id"] == "mine"


def test_ensure_topics_creates_both_and_is_idempotent(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    settings = _settings_for(kafka_broker.bootstrap, tmp_path, kafka_topic_partitions=2)
    created = ensure_topics(settings)
    assert created == [settings.kafka_uploads_topic, settings.kafka_dlq_topic]
    assert ensure_topics(settings) == []
    metadata = AdminClient(admin_config(settings)).list_topics(timeout=5)
    for topic in created:
        assert len(metadata.topics[topic].partitions) == 2
    extra = settings.kafka_uploads_topic + ".extra"
    assert ensure_topics(settings, [settings.kafka_uploads_topic, extra]) == [extra]


def test_published_event_arrives_keyed_with_exact_bytes(kafka_settings: Settings) -> None:
    event = _event()
    with EventPublisher(kafka_settings) as publisher:
        publisher.publish(kafka_settings.kafka_uploads_topic, event.upload_id, event.to_json())
    started = time.monotonic()
    with _consumer(kafka_settings) as consumer:
        [message] = _receive(consumer, 1)
    latency = time.monotonic() - started
    assert message.key() == event.upload_id.encode()
    assert message.value() == event.to_json()
    assert UploadEvent.from_json(message.value()) == event
    assert latency < FIRST_MESSAGE_S, f"first message took {latency:.1f} s"


@pytest.mark.slow
def test_uncommitted_event_is_redelivered_committed_one_is_not(kafka_settings: Settings) -> None:
    topic = kafka_settings.kafka_uploads_topic
    with EventPublisher(kafka_settings) as publisher:
        publisher.publish(topic, "a", b"first")
        with _consumer(kafka_settings) as consumer:
            [seen] = _receive(consumer, 1)  # handled, then "crashed": no commit
        with _consumer(kafka_settings) as consumer:
            [again] = _receive(consumer, 1)
            assert (again.offset(), again.value()) == (seen.offset(), b"first")
            _commit(consumer, again)
        publisher.publish(topic, "b", b"second")
    with _consumer(kafka_settings) as consumer:
        [after] = _receive(consumer, 1)
    assert (after.key(), after.value()) == (b"b", b"second")


@pytest.mark.slow
def test_consumer_resumes_right_after_a_mid_stream_commit(kafka_settings: Settings) -> None:
    topic = kafka_settings.kafka_uploads_topic
    producer = Producer(producer_config(kafka_settings))
    for i in range(20):  # produced back to back: without batch.num.messages=1 these would batch
        producer.produce(topic, key=str(i).encode(), value=f"event-{i}".encode())
    assert producer.flush(10) == 0
    with _consumer(kafka_settings) as consumer:
        first_seven = _receive(consumer, 7)
        assert [m.value() for m in first_seven] == [f"event-{i}".encode() for i in range(7)]
        _commit(consumer, first_seven[-1])
    assert consumer_lag(kafka_settings) == 13
    with _consumer(kafka_settings) as consumer:
        rest = _receive(consumer, 13)
        assert consumer.poll(0.5) is None  # nothing beyond the 20th
    assert [m.value() for m in rest] == [f"event-{i}".encode() for i in range(7, 20)]


def test_unreachable_broker_is_reported_quickly(settings: Settings) -> None:
    closed = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    assert broker_reachable(closed, timeout=1.0) is False
    with pytest.raises(UnavailableError, match=r"at 127\.0\.0\.1:\d+ not reachable"):
        ensure_topics(closed, timeout=1.5)
    assert consumer_lag(closed, timeout=1.0) is None
    with pytest.raises(UnavailableError):
        EventPublisher(closed).publish("sales.uploads", "k", b"v", timeout=1.0)
    assert time.monotonic() - started < 15


def test_local_broker_refuses_a_busy_port(kafka_broker: LocalBroker) -> None:
    with pytest.raises(ConfigurationError, match="already in use"):
        LocalBroker(port=kafka_broker.port).start()
    assert kafka_broker.running


@pytest.mark.parametrize("address", ["0.0.0.0:9092", "10.1.2.3:9092", "no-port"])
def test_run_broker_refuses_non_loopback_or_malformed_addresses(
    settings: Settings, address: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"loopback|host:port"):
        run_broker(settings.model_copy(update={"kafka_bootstrap_servers": address}))


def test_run_broker_creates_topics_and_stops_its_broker_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings_for(f"127.0.0.1:{port}", tmp_path)
    env = {
        **os.environ,
        "SALESFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SALESFLOW_KAFKA_UPLOADS_TOPIC": settings.kafka_uploads_topic,
        "SALESFLOW_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
    }
    script = "from salesflow.config import Settings; from salesflow.kafka import run_broker; "
    script += "run_broker(Settings(_env_file=None))"
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20  # interpreter start-up + broker start, on a busy machine
        while time.monotonic() < deadline and settings.kafka_dlq_topic not in _topics_or_none(
            settings
        ):
            time.sleep(0.2)
        assert {settings.kafka_uploads_topic, settings.kafka_dlq_topic} <= _topics_or_none(settings)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert broker_reachable(settings, timeout=1.0) is False  # the child broker went too
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _topics_or_none(settings: Settings) -> set[str]:
    try:
        return set(AdminClient(admin_config(settings)).list_topics(timeout=0.5).topics)
    except KafkaException:
        return set()


def test_restart_loses_topics_and_ensure_topics_recreates_them(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    settings = _settings_for(own_broker.bootstrap, tmp_path)
    both = [settings.kafka_uploads_topic, settings.kafka_dlq_topic]
    assert ensure_topics(settings) == both
    publisher = EventPublisher(settings)
    publisher.publish(settings.kafka_uploads_topic, "k", b"before", timeout=10)
    own_broker.restart()
    assert not set(both) & _topics(settings)
    # The publisher heals: it notices the lost broker, starts a fresh producer (the new broker
    # knows nothing of the old producer id) and re-creates its topic.
    publisher.publish(settings.kafka_uploads_topic, "k", b"after", timeout=10)
    assert ensure_topics(settings) == [settings.kafka_dlq_topic]
    publisher.close()
    own_broker.kill()
    assert not own_broker.running
    assert broker_reachable(settings, timeout=1.0) is False


def test_publish_to_a_paused_broker_fails_within_the_delivery_timeout(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    # 2 s, not less: a fresh idempotent producer needs ~0.5-1 s for its producer id (measured),
    # and the publisher starts a fresh one after the failure below.
    settings = _settings_for(own_broker.bootstrap, tmp_path, kafka_delivery_timeout_ms=2000)
    with EventPublisher(settings) as publisher:
        publisher.publish(settings.kafka_uploads_topic, "k", b"ok")
        own_broker.pause()
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="timed out"):
            publisher.publish(settings.kafka_uploads_topic, "k", b"lost?")
        elapsed = time.monotonic() - started
        own_broker.resume()
        # The 2 s delivery timeout fails the event; the publisher's own wait is 1 s longer.
        assert elapsed < 3.0, f"publish took {elapsed:.1f} s to fail"
        publisher.publish(settings.kafka_uploads_topic, "k", b"again", timeout=10)


@pytest.mark.slow
def test_two_members_of_a_group_share_partitions_without_losing_events(
    kafka_broker: LocalBroker, tmp_path: Path
) -> None:
    settings = _settings_for(kafka_broker.bootstrap, tmp_path, kafka_topic_partitions=2)
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    for i in range(40):
        producer.produce(settings.kafka_uploads_topic, value=str(i).encode(), partition=i % 2)
    assert producer.flush(10) == 0
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    first_arrived = threading.Event()

    def member(name: str) -> None:
        deadline = time.monotonic() + 30
        with _consumer(settings) as consumer:
            while sum(map(len, seen.values())) < 40 and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                seen[name].append(message.value() or b"")
                first_arrived.set()
                _commit(consumer, message)
                time.sleep(0.2)  # slow handling, so the second member joins mid-stream

    first = threading.Thread(target=member, args=("a",))
    first.start()
    assert first_arrived.wait(FIRST_MESSAGE_S)
    second = threading.Thread(target=member, args=("b",))
    second.start()
    first.join()
    second.join()
    assert {int(v) for v in seen["a"] + seen["b"]} == set(range(40))
    assert seen["b"], "the second member never got a partition"
