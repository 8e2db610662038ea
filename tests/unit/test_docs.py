"""The README stays true: its configuration table is the settings object's, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from salesflow.cli import app
from salesflow.config import settings_table

README = Path(__file__).parents[2] / "README.md"


def test_readme_settings_table_matches_settings() -> None:
    text = README.read_text()
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert block is not None, "README lost its settings markers"
    assert block.group(1) == settings_table(), "run `make docs` to refresh the README"


def test_readme_cli_commands_exist() -> None:
    text = README.read_text()
    named = set(re.findall(r"`salesflow ([a-z-]+)", text))
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert named, "README names no commands"
    assert named <= commands, f"README names commands the CLI lacks: {named - commands}"
