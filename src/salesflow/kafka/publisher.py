"""A producer that publishes one event at a time and returns only once the broker has it."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError, KafkaException, Producer

from salesflow.config import Settings
from salesflow.errors import UnavailableError
from salesflow.kafka.clients import ensure_topics, producer_config

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)

#: Delivery waits poll in slices this long (s); poll returns early when the report comes.
_POLL_SLICE_S = 0.1
#: Added to the delivery timeout when `publish` picks its own wait: the report then always arrives.
_REPORT_MARGIN_S = 1.0


class EventPublisher:
    """A producer that publishes one event at a time and waits until the broker has it.

    After a failed publish, a fatal error or a lost broker, the next publish starts a fresh
    producer: a restarted Tansu forgets producer ids and answers the old one with
    UNKNOWN_PRODUCER_ID or PRODUCER_FENCED forever (measured), which librdkafka does not treat
    as fatal.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._stale: str | None = None  # why the producer must be replaced, if it must
        self._ready_topics: set[str] = set()

    def _on_error(self, error: KafkaError) -> None:
        log.warning("Kafka producer error: %s", error.str())
        if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._stale = error.str()

    def _fresh_producer(self) -> Producer:
        if self._producer is not None:
            self._producer.poll(0)  # serve pending error callbacks: was the broker lost?
            if self._stale is not None:
                log.info("replacing the Kafka producer: %s", self._stale)
                self._producer.purge(blocking=False)  # at most the failed event; caller retries
                self._producer.poll(0)
                self._producer = None
                self._ready_topics.clear()  # a lost broker may have lost its topics too
        if self._producer is None:
            self._stale = None
            config = {**producer_config(self._settings), "error_cb": self._on_error}
            self._producer = Producer(config)
        return self._producer

    def publish(
        self, topic: str, key: str | None, value: bytes, *, timeout: float | None = None
    ) -> None:
        """Send one event and wait for its delivery report; raise UnavailableError otherwise.

        Creates the topic first if it is missing (ConfigurationError if it cannot be made as
        configured). `timeout` defaults to the delivery timeout plus a margin. After a failure the
        event may still arrive later (at-least-once: the caller retries, consumers deduplicate).
        """
        wait = timeout if timeout is not None else self._default_wait()
        deadline = time.monotonic() + wait
        with self._lock:
            producer = self._fresh_producer()
            if topic not in self._ready_topics:
                # Also heals a restarted in-memory broker that lost its topics.
                ensure_topics(self._settings, [topic], timeout=max(deadline - time.monotonic(), 0))
                self._ready_topics.add(topic)
            reports: list[KafkaError | None] = []
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=None if key is None else key.encode(),
                    on_delivery=lambda e, _: reports.append(e),
                )
            except BufferError:
                problem: str | None = "the producer queue is full"
            except KafkaException as exc:
                problem = exc.args[0].str()
            else:
                while not reports and (remaining := deadline - time.monotonic()) > 0:
                    producer.poll(min(remaining, _POLL_SLICE_S))
                if not reports:
                    problem = f"no delivery report within {wait:.1f} s"
                else:
                    problem = reports[0].str() if reports[0] is not None else None
            if problem is not None:
                self._ready_topics.discard(topic)  # re-check the topic next time
                self._stale = problem
                raise UnavailableError(
                    f"Kafka at {self._settings.kafka_bootstrap_servers} did not take the event"
                    f" on {topic!r}: {problem}"
                )

    def _default_wait(self) -> float:
        return self._settings.kafka_delivery_timeout_ms / 1000 + _REPORT_MARGIN_S

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is still queued (up to `timeout` s) and drop the producer."""
        with self._lock:
            if self._producer is None:
                return
            left = self._producer.flush(timeout)
            if left:
                log.warning("%d Kafka event(s) not delivered at close", left)
            self._producer = None

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
