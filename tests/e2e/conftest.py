"""The whole system as real processes on loopback: Tansu broker, moto S3, the three services, Spark."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr

from salesflow.config import Settings
from salesflow.generate import generate_sales
from salesflow.supervisor import Stack
from tests.conftest import free_port

#: Credentials for the moto server only: the children inherit them through the environment.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class System:
    """A running stack and what a test needs to talk to it."""

    settings: Settings
    stack: Stack
    bucket: str
    files: Path

    def sales_file(self, rows: int, seed: int) -> Path:
        path = self.files / f"sales-{rows}-{seed}.csv"
        if not path.exists():
            generate_sales(path, rows=rows, seed=seed)
        return path

    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.settings.s3_endpoint_url, region_name="us-east-1"
        )


@pytest.fixture(scope="module")
def system(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One running system per test module (a start costs ~15 s: the job server's JVM)."""
    root = tmp_path_factory.mktemp("e2e")
    bucket = f"salesflow-e2e-{secrets.token_hex(4)}"
    settings = Settings(  # type: ignore[call-arg]
        data_dir=root / "data",
        storage_url=f"s3://{bucket}/store",
        s3_endpoint_url=s3_server,
        s3_region="us-east-1",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_uploads_topic=f"sales.uploads.{secrets.token_hex(3)}",
        kafka_dlq_topic=f"sales.uploads.dlq.{secrets.token_hex(3)}",
        upload_port=free_port(),
        jobs_port=free_port(),
        spark_master="local[2]",
        num_trees=10,
        consumer_backoff_max_s=2.0,
        auth_token=SecretStr(secrets.token_urlsafe(16)),
        _env_file=None,
    )
    saved = {k: os.environ.get(k) for k in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    stack = Stack(settings)
    try:
        stack.start()
        yield System(settings, stack, bucket, root / "files")
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
