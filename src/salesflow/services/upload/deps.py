"""The upload service's injectable resources, each declared once as an `Annotated` alias.

The lifespan in app.py builds them from settings and keeps them on `app.state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from salesflow.config import Settings
from salesflow.services.upload.db import UploadDB
from salesflow.services.upload.outbox import OutboxRelay
from salesflow.services.upload.streaming import UploadSlots
from salesflow.storage import ObjectStore

__all__ = [
    "DBDep",
    "RelayDep",
    "Resources",
    "ResourcesDep",
    "SettingsDep",
    "SlotsDep",
    "StoreDep",
]


@dataclass
class Resources:
    """Everything the routes use, built once per process by the lifespan."""

    settings: Settings
    store: ObjectStore
    db: UploadDB
    relay: OutboxRelay
    slots: UploadSlots


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_store(resources: ResourcesDep) -> ObjectStore:
    return resources.store


def get_db(resources: ResourcesDep) -> UploadDB:
    return resources.db


def get_relay(resources: ResourcesDep) -> OutboxRelay:
    return resources.relay


def get_slots(resources: ResourcesDep) -> UploadSlots:
    return resources.slots


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
DBDep = Annotated[UploadDB, Depends(get_db)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
SlotsDep = Annotated[UploadSlots, Depends(get_slots)]
