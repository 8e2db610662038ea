"""Shared fixtures. Each external piece has its own plugin module under tests/fixtures/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from salesflow.config import Settings

# Trainings in tests fit the forest alone unless a test names its candidates: the whole model
# competition (per-series statistical fits in Spark's Python workers) costs each training
# seconds that dozens of tests would repeat. tests/integration/test_competition.py and the
# accuracy benchmark (`make bench-smoke` in CI) run the competition itself. Child processes the
# tests start inherit the variable.
os.environ.setdefault("SALESFLOW_CANDIDATES", '["forest"]')

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
