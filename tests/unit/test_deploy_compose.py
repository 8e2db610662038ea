"""deploy/compose.yaml stays in step with the settings: every SALESFLOW_* it names is a real field."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from salesflow.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SALESFLOW_SERVICES = ("upload", "consumer", "jobs")
_VARIABLE = re.compile(r"\bSALESFLOW_[A-Z0-9_]+\b")


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _field_of(variable: str) -> str:
    return variable.removeprefix("SALESFLOW_").lower()


def test_every_salesflow_variable_in_the_deployment_is_a_setting() -> None:
    # Every mention counts: environment keys, comments, and the env-file examples beside it.
    texts = [COMPOSE, *sorted(DEPLOY.glob("*.env.example")), DEPLOY / "Dockerfile"]
    named = {v for path in texts for v in _VARIABLE.findall(path.read_text(encoding="utf-8"))}
    assert "SALESFLOW_SPARK_MASTER" in named  # the scan found what it is meant to find
    unknown = sorted(v for v in named if _field_of(v) not in Settings.model_fields)
    assert unknown == [], f"not fields of salesflow.config.Settings: {unknown}"


def test_the_deployment_defines_every_piece() -> None:
    services = _compose()["services"]
    for name in (*SALESFLOW_SERVICES, "kafka", "minio", "minio-init", "spark-master"):
        assert name in services, name
    workers = [name for name in services if name.startswith("spark-worker")]
    assert len(workers) >= 2, workers
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in _environment(services["kafka"])["KAFKA_PROCESS_ROLES"]  # KRaft
    for name in ("spark-master", *workers):
        assert services[name]["image"].startswith("apache/spark:"), name
    for name in SALESFLOW_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["command"] == ["salesflow", "serve", name]


@pytest.mark.parametrize("name", SALESFLOW_SERVICES)
def test_each_service_environment_is_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment a service gets parses as Settings and points at the other containers."""
    for variable in [v for v in os.environ if v.startswith("SALESFLOW_")]:
        monkeypatch.delenv(variable)
    env = _environment(_compose()["services"][name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.host == "0.0.0.0"
    assert settings.kafka_embedded is False
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.storage_url.startswith("s3://")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.job_server_url == "http://jobs:8002"
    assert settings.upload_service_url == "http://upload:8001"
    assert settings.warehouse_url.startswith("file:///shared/")
    assert settings.auth_token is None  # secrets come from salesflow.env, never from compose.yaml
    if name == "jobs":
        assert settings.spark_master == "spark://spark-master:7077"
        assert settings.spark_driver_host == "jobs"
        assert settings.spark_conf["spark.driver.port"] == "7078"
        # Staged uploads are read by executors: the driver's data dir is on the shared volume.
        assert str(settings.data_dir).startswith("/shared/")


def test_the_shared_volume_is_mounted_where_the_driver_and_executors_look() -> None:
    services = _compose()["services"]
    workers = [name for name in services if name.startswith("spark-worker")]
    for name in ("jobs", *workers):
        assert "shared:/shared" in services[name]["volumes"], name
