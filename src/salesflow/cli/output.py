"""What the CLI prints: tables and JSON on stdout, progress and notes on stderr.

Progress goes to stderr so that `--json` output on stdout stays clean for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = [
    "Column",
    "StageProgress",
    "as_url",
    "console",
    "count_progress",
    "emit",
    "err",
    "fmt",
    "print_forecast",
    "print_forecast_grid",
    "print_json",
    "print_metrics",
    "short_id",
    "stamp",
]

#: Characters of a 32-character id shown in a compact table; commands accept such a prefix back.
SHORT_ID = 8

console = Console()
err = Console(stderr=True)

Column = tuple[str, str | Callable[[dict[str, Any]], Any]]
"""A table column: its header and the record key (or a function of the record) it shows."""


def print_json(data: Any) -> None:
    """The one way the CLI prints JSON: plain, indented, on stdout (no colours, no wrapping)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def emit(
    records: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
    empty: str = "nothing to show",
    compact: Sequence[str] | None = None,
    wide: bool = False,
) -> None:
    """Records as JSON (all their fields) or as a table of `columns`.

    With `compact` (headers), the table shows only those columns, so that it fits an 80-column
    terminal; `wide` shows every column.
    """
    if as_json:
        print_json(list(records))
        return
    if not records:
        console.print(empty)
        return
    shown = [c for c in columns if wide or compact is None or c[0] in compact]
    table = Table(*(header for header, _ in shown), title=title)
    for record in records:
        table.add_row(*(_cell(record, pick) for _, pick in shown))
    console.print(table)


def stamp(iso: Any) -> str | None:
    """An ISO time as the CLI's one date format, "2026-12-08 14:05" (UTC, as stored)."""
    text = str(iso or "")
    return text[:16].replace("T", " ") if text else None


def short_id(value: Any, wide: bool = False) -> str | None:
    """An id as its first SHORT_ID characters (whole with `wide`); commands take the prefix back."""
    if value is None or value == "":
        return None
    return str(value) if wide else str(value)[:SHORT_ID]


def _cell(record: dict[str, Any], pick: str | Callable[[dict[str, Any]], Any]) -> str:
    value = pick(record) if callable(pick) else record.get(pick)
    return "-" if value is None or value == "" else str(value)


def fmt(value: Any, digits: int = 3) -> str:
    """A number with thousands separators, "-" when missing."""
    return "-" if value is None else f"{value:,.{digits}f}"


def as_url(source: str) -> str:
    """A CLI path argument as a URL (URLs pass through); BadParameter when the file is missing."""
    if "://" in source:
        return source
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise typer.BadParameter(f"no such file: {source}")
    return path.as_uri()


# --- progress ----------------------------------------------------------------------------------


@contextmanager
def count_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar of `total` units on stderr; yields `update(done)`."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        progress.refresh()  # drawn at once, not at the first tick: short runs show it too
        yield lambda done: progress.update(task, completed=done)


class StageProgress:
    """A bar over a command's stages, moved by the core's progress messages.

    `stages` are (name, message prefixes that start it); a message with no known prefix only
    updates the text, so new messages from the core never break the bar.
    """

    def __init__(self, stages: Sequence[tuple[str, Sequence[str]]]) -> None:
        self.stages = list(stages)
        self.current = 0
        self._progress = Progress(
            TextColumn("[bold]{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._task = self._progress.add_task(
            "", total=len(self.stages), stage=self.stages[0][0], completed=0
        )

    def __enter__(self) -> StageProgress:
        self._progress.start()
        self._progress.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._progress.update(self._task, completed=len(self.stages))
        self._progress.stop()

    def __call__(self, message: str) -> None:
        """The core's progress callback: move to the stage the message starts, show the message."""
        lowered = message.lower()
        for index, (_, prefixes) in enumerate(self.stages):
            if index > self.current and any(lowered.startswith(p) for p in prefixes):
                self.current = index
        self._progress.update(
            self._task,
            completed=self.current,
            stage=self.stages[self.current][0],
            description=message,
        )


# --- shared renderings -------------------------------------------------------------------------


def print_metrics(metrics: dict[str, Any], cells: str = "store/product/months") -> None:
    """Holdout metrics of a model against the seasonal-naive baseline (`cells`: what a row is)."""
    table = Table(
        title=f"holdout: last {metrics.get('holdout_months', '?')} months, "
        f"{metrics.get('holdout_rows', '?')} {cells}"
    )
    table.add_column("")
    for name in ("rmse", "mae", "wape"):
        table.add_column(name.upper(), justify="right")
    for label, key in (("model", "model"), ("seasonal-naive baseline", "baseline")):
        m = metrics.get(key) or {}
        table.add_row(label, *(fmt(m.get(n)) for n in ("rmse", "mae", "wape")))
    console.print(table)


def _quantity(value: Any) -> str:
    """A predicted quantity as a whole number; "-" for none (outside the forecast horizon)."""
    return "-" if value is None else f"{float(value):,.0f}"


def print_forecast(records: list[dict[str, Any]], title: str) -> None:
    """Predictions, one row per input row or per store/product/period."""
    table = Table(title=title)
    for col in ("store_id", "product_id", "period", "predicted_quantity"):
        table.add_column(col, justify="right" if col == "predicted_quantity" else "left")
    for r in records:
        flags = " (unknown)" if r.get("unknown_store") or r.get("unknown_product") else ""
        if r.get("dropped_reason"):
            flags = f" (dropped: {r['dropped_reason']})"
        table.add_row(
            str(r.get("store_id")),
            str(r.get("product_id")),
            str(r.get("period") or ""),
            _quantity(r.get("predicted_quantity")) + flags,
        )
    console.print(table)


def print_forecast_grid(records: list[dict[str, Any]], names: dict[str, str], title: str) -> None:
    """One row per store/product, one column per month: how a planner reads a forecast."""
    periods = sorted({str(r["period"]) for r in records})
    grid: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in records:
        key = (names.get(r["store_id"], r["store_id"]), names.get(r["product_id"], r["product_id"]))
        grid.setdefault(key, {})[str(r["period"])] = r.get("predicted_quantity")
    table = Table(title=title)
    table.add_column("store")
    table.add_column("product")
    for period in periods:
        table.add_column(period, justify="right")
    for (store, product), values in sorted(grid.items()):
        table.add_row(store, product, *(_quantity(values.get(p)) for p in periods))
    console.print(table)
