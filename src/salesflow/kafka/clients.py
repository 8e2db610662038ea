"""Kafka client configs, topic set-up and health: what every producer, consumer and probe shares.

At-least-once: the producer is idempotent (acks=all); consumers neither auto-commit nor auto-store
offsets, so the worker stores and commits an event's offset only after handling it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # admin re-exports it without declaring it

from salesflow.config import Settings
from salesflow.errors import ConfigurationError, UnavailableError

__all__ = [
    "admin_config",
    "broker_reachable",
    "consumer_config",
    "consumer_lag",
    "ensure_topics",
    "producer_config",
    "rdkafka_log",
    "topic_names",
]

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection failures, ...) go to Python logging, not raw stderr.
rdkafka_log = logging.getLogger("salesflow.kafka.librdkafka")
#: librdkafka's words for a broker that does not listen (yet): expected while the broker starts.
_REFUSED = ("Connection refused", "brokers are down", "broker connections are down")
#: At most one friendly line per this many seconds stands for those lines.
REFUSED_NOTE_EVERY_S = 60.0


class _ExpectedRefusals(logging.Filter):
    """librdkafka's connection-refused lines at debug level; one friendly INFO line instead.

    A broker that is starting, or down, refuses connections: librdkafka logs each attempt as an
    ERROR, but salesflow reports an unreachable broker itself (readiness, `salesflow status`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._noted = -REFUSED_NOTE_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(words in message for words in _REFUSED):
            return True
        now = time.monotonic()
        if now - self._noted >= REFUSED_NOTE_EVERY_S:
            self._noted = now
            log.info("the Kafka broker is not answering yet; retrying (details at debug level)")
        if not rdkafka_log.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


rdkafka_log.addFilter(_ExpectedRefusals())


# --- client configs ----------------------------------------------------------------------------


def _base_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, "logger": rdkafka_log}


def producer_config(settings: Settings) -> dict[str, Any]:
    """Idempotent, acks=all producer that sends one record per batch; `kafka_config` wins."""
    return {
        **_base_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "delivery.timeout.ms": settings.kafka_delivery_timeout_ms,
        # One record per produce batch: the local Tansu broker has a known bug where a consumer
        # whose committed offset falls inside a multi-record batch skips records or hangs.
        # librdkafka: batch.num.messages = max messages per MessageSet; linger.ms=0 sends at once.
        "linger.ms": 0,
        "batch.num.messages": 1,
        # Producers default to auto-creating topics, and Tansu then makes 4 partitions; topics
        # are created by `ensure_topics` with the configured partitions instead.
        "allow.auto.create.topics": False,
        **settings.kafka_config,
    }


def consumer_config(settings: Settings, group_id: str | None = None) -> dict[str, Any]:
    """At-least-once consumer: offsets are stored and committed by the caller after handling."""
    session_ms = settings.kafka_session_timeout_ms
    return {
        **_base_config(settings),
        "group.id": group_id or settings.kafka_consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms,
        # Kafka's rule of thumb: heartbeat at a third of the session timeout.
        "heartbeat.interval.ms": session_ms // 3,
        # Measured on Tansu 0.6: cooperative-sticky hands one partition to two members at once
        # and stalls; the eager range assignor rebalances correctly.
        "partition.assignment.strategy": "range",
        **settings.kafka_config,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """Config for an AdminClient: bootstrap servers plus `kafka_config` (SASL/SSL)."""
    return {**_base_config(settings), **settings.kafka_config}


# --- topics and health -------------------------------------------------------------------------


def _unreachable(bootstrap: str, detail: str) -> UnavailableError:
    return UnavailableError(f"Kafka broker at {bootstrap} not reachable: {detail}")


def topic_names(admin: AdminClient, bootstrap: str, timeout: float) -> set[str]:
    """The broker's topics; UnavailableError when it does not answer within `timeout` s."""
    try:
        metadata = admin.list_topics(timeout=max(timeout, 0.001))
    except KafkaException as exc:
        raise _unreachable(bootstrap, exc.args[0].str()) from None
    finally:
        admin.poll(0)  # hand queued librdkafka log lines to Python logging
    return {name for name, topic in metadata.topics.items() if topic.error is None}


def ensure_topics(
    settings: Settings, topics: Iterable[str] | None = None, *, timeout: float = 10.0
) -> list[str]:
    """Create the missing topics (uploads and DLQ by default); return the names created."""
    if topics is None:
        topics = (settings.kafka_uploads_topic, settings.kafka_dlq_topic)
    wanted = list(dict.fromkeys(topics))
    bootstrap = settings.kafka_bootstrap_servers
    deadline = time.monotonic() + timeout
    admin = AdminClient(admin_config(settings))
    missing = [t for t in wanted if t not in topic_names(admin, bootstrap, timeout)]
    if not missing:
        return []
    remaining = max(deadline - time.monotonic(), 0.1)
    new = [
        NewTopic(t, settings.kafka_topic_partitions, settings.kafka_replication_factor)
        for t in missing
    ]
    # The broker may spend half the budget propagating the topic; the rest covers the round trip.
    futures = admin.create_topics(new, request_timeout=remaining, operation_timeout=remaining / 2)
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=max(deadline - time.monotonic(), 0.1))
        except FutureTimeout:
            raise _unreachable(bootstrap, f"no answer creating topic {topic!r}") from None
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created by someone else meanwhile: fine
            if error.retriable() or error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
                raise _unreachable(bootstrap, error.str()) from None
            raise ConfigurationError(
                f"cannot create topic {topic!r} with {settings.kafka_topic_partitions} partition(s)"
                f" and replication {settings.kafka_replication_factor}: {error.str()}"
            ) from None
        created.append(topic)
    if created:
        log.info("created Kafka topics %s", ", ".join(created))
    return created


def broker_reachable(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the broker answers a metadata request within `timeout` seconds."""
    admin = AdminClient(admin_config(settings))
    try:
        topic_names(admin, settings.kafka_bootstrap_servers, timeout)
    except UnavailableError:
        return False
    return True


def topic_end(settings: Settings, topic: str, *, timeout: float = 5.0) -> int | None:
    """The topic's high watermarks summed over partitions (0 when the broker has no such topic);
    None when the broker does not answer. A broker that lost its log shows a smaller number."""
    consumer = Consumer(consumer_config(settings, "salesflow-watermarks"))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in metadata.partitions
        )
    except KafkaException:
        return None
    finally:
        consumer.close()


def consumer_lag(
    settings: Settings,
    group_id: str | None = None,
    topic: str | None = None,
    *,
    timeout: float = 5.0,
) -> int | None:
    """Events not yet committed by the group, summed over partitions; None when unknown."""
    topic = topic or settings.kafka_uploads_topic
    consumer = Consumer(consumer_config(settings, group_id))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return None
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        lag = 0
        for committed in consumer.committed(partitions, timeout=timeout):
            if committed.error is not None:
                return None
            low, high = consumer.get_watermark_offsets(committed, timeout=timeout)
            # No commit yet (negative offset): the group starts at the earliest record.
            start = committed.offset if committed.offset >= 0 else low
            lag += max(high - start, 0)
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()
