"""The settings groups compose into one flat `Settings`: every field in one group, every name kept."""

from __future__ import annotations

import pytest

from salesflow.config import SETTING_GROUPS, Settings, settings_table


def test_every_field_belongs_to_exactly_one_group() -> None:
    grouped = [name for _, group in SETTING_GROUPS for name in group.__annotations__]
    assert sorted(grouped) == sorted(Settings.model_fields)
    assert len(grouped) == len(set(grouped))


def test_the_table_shows_every_variable_under_its_group() -> None:
    table = settings_table()
    for title, group in SETTING_GROUPS:
        section = table.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
        for name in group.__annotations__:
            assert f"| `SALESFLOW_{name.upper()}` |" in section, (title, name)


def test_grouped_fields_read_and_validate_their_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SALESFLOW_KAFKA_DLQ_TOPIC", "dead")
    monkeypatch.setenv("SALESFLOW_SPARK_CONF", '{"spark.executor.memory": "4g"}')
    monkeypatch.setenv("SALESFLOW_JOBS_PORT", "9002")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kafka_dlq_topic == "dead"
    assert settings.spark_conf == {"spark.executor.memory": "4g"}
    assert settings.job_server_url.endswith(":9002")  # derived across groups
    monkeypatch.setenv("SALESFLOW_MAX_DEPTH", "31")
    with pytest.raises(ValueError, match="max_depth"):
        Settings(_env_file=None)  # type: ignore[call-arg]
