"""Shared fixtures. Each external piece has its own plugin module under tests/fixtures/."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from salesflow.config import Settings

pytest_plugins = [
    "tests.fixtures.spark",
    "tests.fixtures.s3",
    "tests.fixtures.kafka",
    "tests.fixtures.spark_cluster",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it; tests bind only to loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with every piece of local state inside this test's temporary folder."""
    return Settings(data_dir=tmp_path / "data", _env_file=None)
