"""The upload service in-process: TestClient, a file:// store, a Kafka port nothing listens on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.services.upload.app import create_app
from tests.conftest import free_port


@pytest.fixture
def upload_settings(settings: Settings) -> Settings:
    """A closed Kafka port (events wait in the outbox) and a 4 MiB upload limit."""
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "max_upload_bytes": 4 * 1024 * 1024,
        }
    )


@pytest.fixture
def client(upload_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(upload_settings), headers=auth_headers(upload_settings)) as client:
        yield client
