"""salesflow's one settings object: every URL, port, path, threshold and Spark option.

Values come from `SALESFLOW_*` environment variables or an optional `.env` file, are validated once
at start-up, and are then passed to components. No other module reads the environment. The fields
are grouped by concern (`data.py`: storage, Spark, training; `services.py`: Kafka, HTTP, uploads,
event delivery, jobs) and composed into one flat `Settings`, so every name is `settings.<field>`.
"""

from salesflow.config.settings import SETTING_GROUPS, Settings, get_settings, settings_table

__all__ = ["SETTING_GROUPS", "Settings", "get_settings", "settings_table"]
