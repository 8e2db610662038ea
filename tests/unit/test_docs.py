"""The docs stay true: the settings table is the settings object's; the commands they show exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.main import get_command

from salesflow.cli import app
from salesflow.config import settings_table

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

#: A command as the docs show it: an inline code span, or a line of a code block (`$ ` prompt allowed).
_SPAN = re.compile(r"(?<!`)`(salesflow [^`]+)`")
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)
_LINE = re.compile(r"^\s*(?:\$ )?(salesflow [^\n#]+)", re.M)
_FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _shown_commands(path: Path) -> list[str]:
    text = path.read_text()
    blocks = _FENCE.findall(text)
    prose = _FENCE.sub("", text)
    return _SPAN.findall(prose) + [line for block in blocks for line in _LINE.findall(block)]


def _options(command: Any) -> set[str]:
    named = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return named | {"--help"}  # click adds --help to every command, outside its params


def test_configuration_table_matches_settings() -> None:
    text = CONFIGURATION.read_text()
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert block is not None, "docs/configuration.md lost its settings markers"
    assert block.group(1) == settings_table(), "run `make docs` to refresh docs/configuration.md"


def test_readme_cli_commands_exist() -> None:
    text = README.read_text()
    named = set(re.findall(r"`salesflow (?:--[a-z-]+ )*([a-z][a-z-]*)", text))
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert named, "README names no commands"
    assert named <= commands, f"README names commands the CLI lacks: {named - commands}"


def test_shown_commands_and_their_flags_exist() -> None:
    """Each `salesflow ...` the README or a docs page shows names real (sub)commands and options."""
    root = get_command(app)
    wrong = []
    for page in PAGES:
        for shown in _shown_commands(page):
            words = shown.split()[1:]
            command = root
            allowed = _options(root)
            for word in words:
                if word.startswith("-") and command is root:
                    continue  # an option of `salesflow` itself, e.g. --debug
                if word not in getattr(command, "commands", {}):
                    break
                command = command.commands[word]
                allowed |= _options(command)
            if command is root and any(not word.startswith("-") for word in words):
                wrong.append(f"{page.name}: `{shown}` names no command")
                continue
            unknown = set(_FLAG.findall(shown)) - allowed
            if unknown:
                wrong.append(f"{page.name}: `{shown}` has options the CLI lacks: {sorted(unknown)}")
    assert not wrong, "\n".join(wrong)
