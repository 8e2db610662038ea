"""The upload consumer's loop: Kafka in, one handler call per event, commit only when it is settled.

At-least-once, one event at a time per process: an event's offset is committed (synchronously)
only after the handler returned `Done`, or `DeadLetter` and the dead letter was delivered. On
`Retry` the same event is handled again after a capped exponential back-off, and after
`consumer_give_up_s` of retrying it is dead-lettered.

Staying in the group during a long retry: librdkafka sends heartbeats from its own thread, so the
session never times out, but a consumer that does not call `poll()` for `max.poll.interval.ms`
(5 min by default) is thrown out of the group. So the back-off does not sleep: it pauses every
assigned partition (librdkafka then stops fetching and drops what it prefetched, and `resume`
fetches again from the last message handed to us + 1) and keeps calling `poll()` in short slices,
which also serves rebalance callbacks. If the held event's partition is revoked meanwhile, the
event is abandoned uncommitted: its new owner handles it. One handler call (an HTTP request, a
checksum read) must therefore finish within `max.poll.interval.ms`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from salesflow import faults, kafka
from salesflow.clients.jobs import JobServerClient
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import SalesflowError, UnavailableError
from salesflow.logs import bind, configure_logging
from salesflow.services.consumer.deadletter import encode_dead_letter
from salesflow.services.consumer.handler import (
    DeadLetter,
    Done,
    Outcome,
    Retry,
    UploadHandler,
)
from salesflow.storage import store_for

__all__ = ["Handler", "build_handler", "consume", "run"]

log = logging.getLogger(__name__)

#: How long one poll waits for an event: bounds how late a stop request is noticed when idle.
POLL_TIMEOUT_S = 0.5
#: Poll slice while backing off: far below max.poll.interval.ms, and stop is noticed within it.
BACKOFF_SLICE_S = 0.2
#: At most one topic re-creation per this many seconds while the broker reports unknown topics.
TOPIC_RECHECK_S = 5.0
#: Waits for the broker at start-up (topic creation) and for a dead letter's delivery.
KAFKA_TIMEOUT_S = 10.0
#: How long a graceful stop waits for queued status reports before closing.
CLOSE_TIMEOUT_S = 5.0

_UNKNOWN_TOPIC = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}


class Handler(Protocol):
    """What the loop needs from a handler (UploadHandler, or a test's own)."""

    def handle(self, value: bytes | None) -> Outcome: ...

    def give_up(self, value: bytes | None, last: Retry) -> DeadLetter: ...


def build_handler(settings: Settings) -> tuple[UploadHandler, Callable[[], None]]:
    """The production handler over the configured store and service clients, and its closer."""
    jobs = JobServerClient(settings)
    uploads = UploadClient(settings)
    handler = UploadHandler(settings, store_for(settings), jobs, uploads)

    def close() -> None:
        handler.close(CLOSE_TIMEOUT_S)
        for client in (jobs, uploads):
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()

    return handler, close


def run(settings: Settings, stop: threading.Event | None = None) -> None:
    """The consumer process: configure logging, handle SIGTERM/SIGINT, consume until stopped."""
    configure_logging("consumer")
    stop = stop or threading.Event()
    handler, close = build_handler(settings)
    with _stop_on_signals(stop):
        try:
            consume(settings, handler, stop)
        finally:
            close()


def consume(settings: Settings, handler: Handler, stop: threading.Event) -> None:
    """Consume the uploads topic with `handler` until `stop` is set (tests call this directly)."""
    config = {
        **kafka.consumer_config(settings),
        # Stated again because correctness depends on them: offsets move only when we say so.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }
    publisher = kafka.EventPublisher(settings)
    consumer = Consumer(config)
    try:
        _Loop(settings, consumer, publisher, handler, stop).run()
    finally:
        consumer.close()
        publisher.close(KAFKA_TIMEOUT_S)
        log.info("upload consumer stopped")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (only the main thread may install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _key(msg: Message) -> str | None:
    raw = msg.key()
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class _Loop:
    """One consumer's poll -> handle -> commit loop."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        publisher: kafka.EventPublisher,
        handler: Handler,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.publisher = publisher
        self.handler = handler
        self.stop = stop
        self.topic = settings.kafka_uploads_topic
        # Events polled while backing off (only after a rebalance handed us a new partition).
        self._pending: deque[Message] = deque()
        # Partitions revoked or lost since the current event was taken.
        self._revoked: set[tuple[str, int]] = set()
        self._topics_checked = 0.0

    # --- set-up and the main loop -----------------------------------------------------------

    def run(self) -> None:
        self._topics_checked = time.monotonic()
        self._ensure_topics(force=True)
        self._subscribe()
        log.info("consuming %s as group %s", self.topic, self.settings.kafka_consumer_group)
        while not self.stop.is_set():
            msg = self._pending.popleft() if self._pending else self.consumer.poll(POLL_TIMEOUT_S)
            if msg is None:
                self._check_topics_when_idle()
                continue
            error = msg.error()
            if error is not None:
                self._on_error(error)
                continue
            if self.stop.is_set():
                break  # taken but not handled: not committed, so it is redelivered
            self._process(msg)

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _names(partitions))
        self._forget(partitions)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (left the group)", _names(partitions))
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._revoked |= gone
        # Their new owner starts from the committed offset: drop what we took but did not handle.
        self._pending = deque(m for m in self._pending if _where(m) not in gone)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        if error.code() in _UNKNOWN_TOPIC:
            # The in-memory local broker forgets its topics when it restarts: create them again.
            log.warning("Kafka reports an unknown topic (%s): re-creating topics", error.str())
            self._ensure_topics()
        else:
            log.warning("Kafka consumer error: %s", error.str())

    def _check_topics_when_idle(self) -> None:
        """With no partitions, check now and then that our topic still exists.

        A restarted in-memory broker has forgotten its topics, and librdkafka does not report
        that to a consumer whose topic vanished: it only ends up with an empty assignment.
        """
        if self.consumer.assignment() or not self._due():
            return
        try:
            found = self.consumer.list_topics(self.topic, timeout=KAFKA_TIMEOUT_S).topics
        except KafkaException as exc:
            log.info("no topic metadata from Kafka: %s", exc.args[0].str())
            return
        topic = found.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            log.warning("topic %s is missing: re-creating topics", self.topic)
            self._ensure_topics(force=True)

    def _due(self) -> bool:
        """True at most once per TOPIC_RECHECK_S (topic checks are rate-limited)."""
        now = time.monotonic()
        if now - self._topics_checked < TOPIC_RECHECK_S:
            return False
        self._topics_checked = now
        return True

    def _ensure_topics(self, *, force: bool = False) -> None:
        if not force and not self._due():
            return
        topics = [self.topic, self.settings.kafka_dlq_topic]
        try:
            created = kafka.ensure_topics(self.settings, topics, timeout=KAFKA_TIMEOUT_S)
        except UnavailableError as exc:
            log.warning("could not check the Kafka topics: %s", exc)
            return
        if self.topic in created and not self.consumer.assignment():
            # Subscribing again makes librdkafka fetch the new topic's metadata and rejoin now,
            # instead of at its next periodic metadata refresh (5 min by default).
            self._subscribe()

    # --- one event ----------------------------------------------------------------------------

    def _process(self, msg: Message) -> None:
        """Handle one event until it is settled (commit), or abandon it (stop, revoked)."""
        value = msg.value()
        self._revoked.clear()
        with bind(upload_id=_key(msg)):
            started = time.monotonic()
            delay = self.settings.consumer_backoff_initial_s
            while True:
                outcome = self._handle(value)
                elapsed = time.monotonic() - started
                if isinstance(outcome, Retry) and elapsed >= self.settings.consumer_give_up_s:
                    outcome = self.handler.give_up(value, outcome)
                if isinstance(outcome, DeadLetter):
                    outcome = self._publish_dead_letter(outcome, value) or outcome
                if not isinstance(outcome, Retry):
                    if isinstance(outcome, Done):
                        faults.reached(self.settings, "consumer.after_train")
                    self._commit(msg)
                    return
                log.info("event not settled (%s); retrying in %.1f s", outcome.reason, delay)
                if not self._back_off(msg, delay):
                    log.info("event abandoned uncommitted at offset %s", msg.offset())
                    return
                delay = min(delay * 2, self.settings.consumer_backoff_max_s)

    def _handle(self, value: bytes | None) -> Outcome:
        try:
            return self.handler.handle(value)
        except Exception as exc:  # a handler bug must not kill the stream: retry, then give up
            log.error("the handler failed unexpectedly", exc_info=exc)
            return Retry("internal_error", f"unexpected {exc.__class__.__name__} in the consumer")

    def _publish_dead_letter(self, outcome: DeadLetter, value: bytes | None) -> Retry | None:
        """Send the dead letter; a Retry if the broker did not take it (then nothing is committed)."""
        record = encode_dead_letter(outcome.reason, outcome.detail, outcome.upload_id, value)
        try:
            self.publisher.publish(
                self.settings.kafka_dlq_topic,
                outcome.upload_id,
                record,
                timeout=KAFKA_TIMEOUT_S,
            )
        except SalesflowError as exc:
            log.warning("dead letter not delivered: %s", exc)
            return Retry("dead_letter_unavailable", "the dead-letter topic is not reachable")
        log.info("event dead-lettered: %s", outcome.reason)
        return None

    def _commit(self, msg: Message) -> None:
        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition: its new owner handles the event again,
            # which is safe because training requests are idempotent per upload.
            log.warning("commit of offset %s failed: %s", msg.offset(), exc.args[0].str())

    # --- backing off without leaving the group ------------------------------------------------

    def _back_off(self, held: Message, seconds: float) -> bool:
        """Wait `seconds` while polling; False if the held event must be abandoned."""
        deadline = time.monotonic() + seconds
        held_partition = _where(held)
        self._set_paused(True)
        try:
            while not self.stop.is_set():
                if held_partition in self._revoked:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                msg = self.consumer.poll(min(BACKOFF_SLICE_S, remaining))
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    self._on_error(error)
                    continue
                # A partition assigned during the back-off is not paused yet: keep its event for
                # later and pause it, so librdkafka resumes it after this event.
                self._pending.append(msg)
                self._pause([TopicPartition(*_where(msg))])
            return False
        finally:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        try:
            assigned = self.consumer.assignment()
            if assigned:
                (self.consumer.pause if paused else self.consumer.resume)(assigned)
        except KafkaException as exc:
            log.warning("could not %s partitions: %s", "pause" if paused else "resume", exc)

    def _pause(self, partitions: list[TopicPartition]) -> None:
        try:
            self.consumer.pause(partitions)
        except KafkaException as exc:
            log.warning("could not pause %s: %s", _names(partitions), exc)


def _where(msg: Message) -> tuple[str, int]:
    """The topic and partition of an event (only error events lack them)."""
    topic, partition = msg.topic(), msg.partition()
    assert topic is not None and partition is not None
    return topic, partition


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
