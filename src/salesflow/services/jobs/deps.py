"""What the job server's routes depend on, each declared once as an `Annotated` alias."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from salesflow.config import Settings
from salesflow.errors import UnavailableError
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.admission import UploadAdmission
from salesflow.services.jobs.db import JobDB
from salesflow.services.jobs.runner import JobRunner
from salesflow.services.jobs.startup import SessionStartup
from salesflow.storage import ObjectStore

__all__ = [
    "DbDep",
    "RegistryDep",
    "RunnerDep",
    "ServerState",
    "SettingsDep",
    "StateDep",
    "StoreDep",
]


@dataclass
class ServerState:
    """Everything the lifespan builds and the routes use."""

    settings: Settings
    db: JobDB
    registry: ModelRegistry
    store: ObjectStore
    runner: JobRunner
    startup: SessionStartup
    #: Synchronous predictions running now are bounded by settings.predict_max_concurrent.
    predict_slots: threading.BoundedSemaphore
    #: Which uploads may train (asks the upload service).
    admission: UploadAdmission


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
