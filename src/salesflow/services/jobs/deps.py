"""What the job server's routes depend on, each declared once as an `Annotated` alias."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from salesflow.config import Settings
from salesflow.errors import UnavailableError
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.db import JobDB
from salesflow.services.jobs.engine import Engine
from salesflow.services.jobs.runner import JobRunner
from salesflow.storage import ObjectStore

__all__ = [
    "DbDep",
    "RegistryDep",
    "RunnerDep",
    "ServerState",
    "SettingsDep",
    "SparkWarmup",
    "StateDep",
    "StoreDep",
]

log = logging.getLogger(__name__)


class SparkWarmup:
    """Starts the warm SparkSession in a background thread so /healthz answers at once, then
    runs the engine's JIT warm-up (salesflow.spark.warmup) in that thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ready = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._start, name="spark-warmup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _start(self) -> None:
        try:
            session = self.engine.spark()
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


@dataclass
class ServerState:
    """Everything the lifespan builds and the routes use."""

    settings: Settings
    db: JobDB
    registry: ModelRegistry
    store: ObjectStore
    runner: JobRunner
    warmup: SparkWarmup
    #: Synchronous predictions running now are bounded by settings.predict_max_concurrent.
    predict_slots: threading.BoundedSemaphore


def get_state(request: Request) -> ServerState:
    state = getattr(request.app.state, "server", None)
    if state is None:
        raise UnavailableError("the job server is starting")
    assert isinstance(state, ServerState)
    return state


def get_settings(state: Annotated[ServerState, Depends(get_state)]) -> Settings:
    return state.settings


def get_db(state: Annotated[ServerState, Depends(get_state)]) -> JobDB:
    return state.db


def get_registry(state: Annotated[ServerState, Depends(get_state)]) -> ModelRegistry:
    return state.registry


def get_runner(state: Annotated[ServerState, Depends(get_state)]) -> JobRunner:
    return state.runner


def get_store(state: Annotated[ServerState, Depends(get_state)]) -> ObjectStore:
    return state.store


StateDep = Annotated[ServerState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[JobDB, Depends(get_db)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
