"""The typer apps every command module registers on, and the settings the commands use."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated

import typer

from salesflow.config import Settings, get_settings

__all__ = [
    "HistoryMode",
    "JsonOption",
    "WideOption",
    "app",
    "models_app",
    "serve_app",
    "settings",
    "state",
]

app = typer.Typer(
    help="salesflow: sales history in, demand forecasts out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List model versions and choose the active one.", invoke_without_command=True
)
serve_app = typer.Typer(help="Run one service in the foreground (what `salesflow up` starts).")
app.add_typer(models_app, name="models")
app.add_typer(serve_app, name="serve")

#: Global flags set by the callback below.
state: dict[str, bool] = {"debug": False}

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print JSON on stdout for scripts (progress stays on stderr)."),
]


WideOption = Annotated[
    bool,
    typer.Option("--wide", help="Every column and whole ids (the default fits 80 columns)."),
]


class HistoryMode(StrEnum):
    """What `--mode` of `upload` and `train` accepts (Settings.history_mode's values; upper-case
    names: `replace` is a str method)."""

    REPLACE = "replace"
    APPEND = "append"
    REJECT = "reject"


def settings() -> Settings:
    """The process's settings (read once from the environment and .env)."""
    return get_settings()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING)
