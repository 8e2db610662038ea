"""Benchmark reports: rows, ratios, targets and skips; printed as a table and saved as JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Report", "Target", "console", "fmt"]

#: Wide output when not on a terminal (CI logs): tables are read there, not in an 80-column TTY.
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Target:
    """A goal from the project's issue: met or missed is reported, never a failure. A `stretch`
    goal is ours, stricter than the issue's (shown as such)."""

    name: str
    value: float | None
    goal: float
    unit: str
    higher_is_better: bool
    stretch: bool = False

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def as_text(self) -> str:
        text = f"{'>=' if self.higher_is_better else '<='} {self.goal:g} {self.unit}".strip()
        return f"stretch {text}" if self.stretch else text


def fmt(value: Any) -> str:
    """A compact human form of a number for tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


@dataclass
class Report:
    """One benchmark's rows, ratios, targets and skips; printed as a table and saved as JSON."""

    name: str
    title: str
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[dict[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: The 1-minute load when the benchmark began (machine info has the load at its end).
    load_at_start: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))

    def add(self, **row: Any) -> dict[str, Any]:
        self.rows.append(row)
        return row

    def skip(self, label: str, why: str) -> None:
        """A row that could not run; printed as "skipped: <why>"."""
        console.print(f"  [yellow]skipped[/]: {label}: {why}")
        self.skipped.append({"row": label, "why": why})

    def target(
        self,
        name: str,
        value: float | None,
        goal: float,
        unit: str = "",
        *,
        higher: bool = True,
        stretch: bool = False,
    ) -> Target:
        rounded = None if value is None else round(value, 4)
        found = Target(name, rounded, goal, unit, higher, stretch)
        self.targets.append(found)
        return found

    def headline(self, measurement: str, result: str, target: Target | None = None) -> None:
        """A line for SUMMARY.md (the README's Performance table)."""
        met = "" if target is None or target.met is None else ("met" if target.met else "missed")
        self.summary.append(
            {
                "measurement": measurement,
                "result": result,
                "target": target.as_text() if target else "",
                "met": met,
            }
        )

    def to_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "mode": self.mode,
            "duration_s": round(time.perf_counter() - self.started, 1),
            "machine": {**machine, "load_average_at_start": self.load_at_start},
            "rows": self.rows,
            "ratios": self.ratios,
            "targets": [{**t.__dict__, "met": t.met} for t in self.targets],
            "skipped": self.skipped,
            "notes": self.notes,
            "summary": self.summary,
        }

    def print(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns.extend(c for c in row if c not in columns)
        table = Table(title=f"{self.title} ({self.mode})", title_justify="left")
        for column in columns:
            table.add_column(column, justify="left" if column == columns[0] else "right")
        for row in self.rows:
            table.add_row(*(fmt(row.get(c)) for c in columns))
        for skip in self.skipped:
            table.add_row(skip["row"], *(["skipped: " + skip["why"][:70]] if columns[1:] else []))
        console.print(table)
        for name, value in self.ratios.items():
            console.print(f"  ratio {name}: {fmt(value)}x")
        for t in self.targets:
            mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "n/a"}[t.met]
            console.print(f"  target {t.name}: {fmt(t.value)} {t.unit} ({t.as_text()}) {mark}")
        for note in self.notes:
            console.print(f"  note: {note}")

    def write(self, results_dir: Path, machine: dict[str, Any]) -> Path:
        """Save as `<results_dir>/<name>.json` (via a temp file, so a crash leaves the old one)."""
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(machine), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path
