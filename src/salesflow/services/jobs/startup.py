"""The job server's start-up of its warm session: in the background, with its readiness reported."""

from __future__ import annotations

import logging
import threading

from salesflow.errors import UnavailableError
from salesflow.services.jobs.engine import SparkEngine

__all__ = ["SessionStartup"]

log = logging.getLogger(__name__)


class SessionStartup:
    """Starts the engine's SparkSession in a background thread so /healthz answers at once, then
    runs the engine's JIT warm-up (salesflow.spark.warmup) in that thread."""

    def __init__(self, engine: SparkEngine) -> None:
        self.engine = engine
        self._ready = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._start, name="spark-startup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _start(self) -> None:
        try:
            session = self.engine.session()
        except Exception as exc:
            log.error("spark did not start", exc_info=exc)
            self._error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            return
        self._ready.set()
        if self.engine.warm_up is not None:
            self.engine.warm_up.run(session)  # ready meanwhile: the first job stops it

    def problem(self) -> str | None:
        """None when the session is up, else why not ("starting" or the start-up error)."""
        if self._ready.is_set():
            return None
        return f"failed: {self._error}" if self._error else "starting"

    def require(self) -> None:
        """Raise UnavailableError (503) until the session is up."""
        problem = self.problem()
        if problem:
            raise UnavailableError(f"spark: {problem}")

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
