"""`salesflow up`: the whole system on one machine, each service its own child process.

Starts the local broker (unless an external Kafka is configured), the job server, the upload service, the
dashboard and the upload consumer; waits until each is ready; stops them all, newest first, on exit.
While it runs, `Stack.heal` restarts a child that died, with a backoff, says so (printed and in
`logs/supervisor.log`) and keeps each child's restarts in `supervisor.json`, which `salesflow status`
shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from salesflow import kafka
from salesflow.config import Settings
from salesflow.errors import UnavailableError

__all__ = ["STATE_FILE", "Child", "Stack", "read_restarts", "running_stack"]

#: Services get this long to become ready; the job server's first SparkSession takes ~10 s on 2 cores.
READY_TIMEOUT_S = 120.0
#: A dead child is restarted after 1 s, then 2, 4, ... up to 30 s while it keeps dying; a child that
#: ran for STABLE_S before it died starts again from 1 s.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_S = 60.0
#: The supervisor's record of its children (restarts, pids), read by `salesflow status`.
STATE_FILE = "supervisor.json"
#: Grace period between SIGTERM and SIGKILL when stopping a child. Children stop in a second or two;
#: a job server that is recording Spark's class archive waits ~15 s for its JVM to write it
#: (once per machine; spark/class_archive.py).
STOP_GRACE_S = 30.0


@dataclass
class Child:
    """One child process and where its log goes."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    #: Deaths in a row without a stable run, and when the next restart is due (heal()).
    failures: int = 0
    restart_due: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600 whatever the umask: a log names uploads and files (salesflow/private.py)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log = os.fdopen(fd, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(  # argument list, no shell
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _cli(*args: str) -> list[str]:
    """The argument list that runs a salesflow CLI command in a child Python."""
    return [sys.executable, "-m", "salesflow.cli", *args]


@dataclass
class Stack:
    """The children of `salesflow up`, in start order."""

    settings: Settings
    children: list[Child] = field(default_factory=list)

    def plan(self) -> list[Child]:
        logs = self.settings.data_dir / "logs"
        children: list[Child] = []
        if self.settings.kafka_embedded:
            children.append(
                Child(
                    "broker",
                    _cli("broker"),
                    logs / "broker.log",
                    lambda: kafka.broker_reachable(self.settings, timeout=1.0),
                    url=f"kafka://{self.settings.kafka_bootstrap_servers}",
                )
            )
        jobs, upload = self.settings.job_server_url, self.settings.upload_service_url
        dashboard = f"http://{self.settings.host}:{self.settings.dashboard_port}"
        children += [
            Child(
                "job server", _cli("serve", "jobs"), logs / "jobs.log", _http_ready(jobs), url=jobs
            ),
            Child(
                "upload service",
                _cli("serve", "upload"),
                logs / "upload.log",
                _http_ready(upload),
                url=upload,
            ),
            Child(
                "dashboard",
                _cli("serve", "dashboard"),
                logs / "dashboard.log",
                _http_ready(dashboard),
                url=dashboard,
            ),
            Child(
                "upload consumer", _cli("serve", "consumer"), logs / "consumer.log", lambda: True
            ),
        ]
        return children

    def env(self, **overrides: Any) -> dict[str, str]:
        """The children's environment: ours plus every setting, so they see the same values."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return {**os.environ, **settings.to_env()}

    def start(self, on_ready: Callable[[Child], None] | None = None) -> None:
        """Start every child in order, each ready before the next starts."""
        for child in self.plan():
            self.children.append(child)
            self._launch(child)
            if on_ready is not None:
                on_ready(child)

    def _launch(self, child: Child, **overrides: Any) -> None:
        child.start(self.env(**overrides))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not child.ready():
            if not child.alive():
                raise UnavailableError(
                    f"{child.name} exited during start-up; its log ({child.log_path}) ends:\n"
                    + child.log_tail()
                )
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"{child.name} not ready after {READY_TIMEOUT_S:.0f} s; see {child.log_path}"
                )
            time.sleep(0.2)

    def child(self, name: str) -> Child:
        """A started child by name ("broker", "job server", "upload service", "dashboard",
        "upload consumer")."""
        return next(c for c in self.children if c.name == name)

    def restart(self, name: str, **overrides: Any) -> Child:
        """Stop (if running) and start one child again, with setting overrides (fault tests)."""
        child = self.child(name)
        child.stop()
        self._launch(child, **overrides)
        return child

    def heal(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Restart each child that died, with a backoff; `say` (and logs/supervisor.log) tells."""
        now = time.monotonic()
        for child in self.children:
            if child.alive() or child.process is None:
                continue
            if child.restart_due is None:
                ran = now - child.started_at
                child.failures = 1 if ran >= STABLE_S else child.failures + 1
                delay = min(RESTART_BACKOFF_S * 2 ** (child.failures - 1), RESTART_BACKOFF_MAX_S)
                child.restart_due = now + delay
                self._tell(
                    say,
                    f"{child.name} died (exit code {child.process.returncode}) after {ran:.0f} s; "
                    f"restarting it in {delay:g} s",
                )
            elif now >= child.restart_due:
                child.restart_due = None
                child.stop()  # closes its log file
                child.start(self.env())
                child.restarts += 1
                self._tell(say, f"{child.name} restarted (restart {child.restarts})")
        self.write_state()

    def _tell(self, say: Callable[[str], None], message: str) -> None:
        say(message)
        path = self.settings.data_dir / "logs" / "supervisor.log"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as log:
            log.write(json.dumps({"ts": stamp, "service": "supervisor", "msg": message}) + "\n")

    def write_state(self) -> None:
        """Record each child's pid and restarts in <data_dir>/supervisor.json (atomically)."""
        state = {
            "pid": os.getpid(),
            "children": {
                c.name: {
                    "pid": c.process.pid if c.process is not None else None,
                    "alive": c.alive(),
                    "restarts": c.restarts,
                }
                for c in self.children
            },
        }
        path = self.settings.data_dir / STATE_FILE
        temp = path.with_name(f".{STATE_FILE}.tmp-{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out)
        os.replace(temp, path)

    def failed(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children if not c.alive()), None)

    def stop(self) -> None:
        """Stop every child, newest first (the consumer before the services it calls)."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        with contextlib.suppress(OSError):
            (self.settings.data_dir / STATE_FILE).unlink()


@contextlib.contextmanager
def running_stack(
    settings: Settings, on_ready: Callable[[Child], None] | None = None
) -> Iterator[Stack]:
    """The whole system for the duration of a `with` block."""
    stack = Stack(settings)
    try:
        stack.start(on_ready)
        yield stack
    finally:
        stack.stop()


def read_restarts(settings: Settings) -> dict[str, int] | None:
    """Each child's restarts as the running `salesflow up` recorded them; None if none runs."""
    try:
        state = json.loads((settings.data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)  # the supervisor that wrote it still runs
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {name: int(child.get("restarts", 0)) for name, child in state["children"].items()}
