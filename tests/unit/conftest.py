"""Fixtures shared by the CLI's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from salesflow.config import Settings, get_settings
from tests.conftest import free_port


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on free ports where nothing listens, exported for the CLI's get_settings()."""
    settings = Settings(
        data_dir=tmp_path / "data",
        upload_port=free_port(),
        jobs_port=free_port(),
        dashboard_port=free_port(),
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        auth_token=SecretStr("cli-test-token-" + "x" * 20),
        _env_file=None,
    )
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()
