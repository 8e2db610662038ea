"""One running system per e2e module: Tansu broker, moto S3, the three services, Spark."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.system import System, running_system


@pytest.fixture(scope="module")
def system(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A start costs ~15 s (the job server's JVM), so the module's tests share one system."""
    with running_system(tmp_path_factory.mktemp("e2e"), s3_endpoint=s3_server) as running:
        yield running
