"""Shared fixtures. Each external piece has its own plugin module under tests/fixtures/."""

from __future__ import annotations

import os
import random
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


#: Ports this test run has handed out (never handed out twice).
_HANDED_OUT: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range.

    A port the OS picks for bind(0) is an ephemeral one, which any outgoing connection (Spark's,
    Kafka's, py4j's) may take as its local port in the seconds before the service binds it:
    a dashboard started after the job server once found its port taken that way. Below the
    range, only another listener can collide, and the bind check here rules out the ones there.
    """
    floor = _ephemeral_floor()
    chooser = random.SystemRandom()
    for _ in range(1000):
        port = chooser.randrange(max(1024, floor - 12_000), floor)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range on 127.0.0.1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with every piece of local state inside this test's temporary folder."""
    # Job servers built from these settings run without an upload service to ask about uploads
    # (the fault suite's whole system keeps the check on).
    return Settings(data_dir=tmp_path / "data", train_requires_upload_record=False, _env_file=None)
