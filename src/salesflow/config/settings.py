"""The one `Settings` class, composed from the setting groups, and the configuration table."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salesflow.config.data import SparkSettings, StorageSettings, TrainingSettings
from salesflow.config.services import (
    DeliverySettings,
    FaultSettings,
    HttpLimitSettings,
    JobServerSettings,
    KafkaSettings,
    SecuritySettings,
    ServiceSettings,
    UploadSettings,
)
from salesflow.urls import local_path_of

__all__ = ["SETTING_GROUPS", "Settings", "get_settings", "settings_table"]

#: Each group's heading in the configuration table, in the order the table shows them.
SETTING_GROUPS: tuple[tuple[str, type], ...] = (
    ("Storage", StorageSettings),
    ("Spark", SparkSettings),
    ("Training and the model", TrainingSettings),
    ("Kafka", KafkaSettings),
    ("Services and HTTP", ServiceSettings),
    ("Security", SecuritySettings),
    ("HTTP limits", HttpLimitSettings),
    ("Uploads", UploadSettings),
    ("Upload events: outbox and consumer", DeliverySettings),
    ("Job server", JobServerSettings),
    ("Fault tests", FaultSettings),
)


# pydantic collects fields from the last base first, so the groups are listed in reverse: fields
# (and `salesflow config`'s rows) then come in SETTING_GROUPS order.
class Settings(
    FaultSettings,
    JobServerSettings,
    DeliverySettings,
    UploadSettings,
    HttpLimitSettings,
    SecuritySettings,
    ServiceSettings,
    KafkaSettings,
    TrainingSettings,
    SparkSettings,
    StorageSettings,
    BaseSettings,
):
    """All of salesflow's configuration; each field is `SALESFLOW_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="SALESFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.storage_url:
            self.storage_url = (self.data_dir / "objects").as_uri()
        if not self.warehouse_url:
            self.warehouse_url = (self.data_dir / "warehouse").as_uri()
        if not self.upload_service_url:
            self.upload_service_url = f"http://{self.host}:{self.upload_port}"
        if not self.job_server_url:
            self.job_server_url = f"http://{self.host}:{self.jobs_port}"
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as SALESFLOW_* variables, so child processes see exactly the same values."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"SALESFLOW_{name.upper()}"] = str(value)
        return env

    @property
    def warehouse_path(self) -> Path:
        """The warehouse as a local folder (only file:// warehouses have one)."""
        return local_path_of(self.warehouse_url)


def settings_table() -> str:
    """The configuration table in markdown: one `###` heading and table per setting group."""
    sections = []
    for title, group in SETTING_GROUPS:
        lines = [f"### {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in group.__annotations__:
            info = Settings.model_fields[name]
            default = info.get_default(call_default_factory=True)
            shown = "" if default in (None, "") else f"`{default}`"
            if isinstance(default, Path):
                shown = f"`{default}`"
            lines.append(f"| `SALESFLOW_{name.upper()}` | {shown} | {info.description or ''} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
