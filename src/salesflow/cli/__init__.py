"""The `salesflow` command line: thin commands over the core and the services' clients.

Commands live by subject: `data` (generate, upload, uploads), `forecasting` (train, predict,
forecast, retrain), `versions` (models: list, history, activate, coherence), `system` (up, serve,
broker, demo, status, jobs, config; `supervisor` and `demo` run the processes); `output` holds
the table, JSON and progress helpers they share.
"""

from __future__ import annotations

import sys

from salesflow.cli import (  # noqa: F401  (registers the commands)
    data,
    forecasting,
    history,
    system,
    versions,
)
from salesflow.cli.app import app, state
from salesflow.cli.output import err
from salesflow.errors import SalesflowError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: one clear line on error, a traceback only with --debug."""
    try:
        app()
    except SalesflowError as exc:
        if state["debug"]:
            raise
        err.print(f"[red]error[/] ({exc.code}): {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
