"""The shape of a prediction answer that keeps the user's rows, shared by the in-process and the
Spark path.

One answer row per input row, in the input's order: the input's own columns first (as read, so a
user joins the answer back to their file), then `store_name` and `product_name` from the names
table (`salesflow.sales.names`) when the input lacks them, then `period` (the month the row was aggregated to),
the answer columns of `output_columns` without the keys, and `dropped_reason` (why a row could not
be scored; empty when it was). An answer column whose name the input already uses is prefixed
with `answer_`. Rows that could not be scored are counted per reason with their first line
numbers; a file with no row left to score is refused (`NothingToPredictError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from salesflow.errors import NothingToPredictError
from salesflow.sales.names import Kind
from salesflow.serving.facts import output_columns

__all__ = [
    "DROPPED_COLUMN",
    "FIRST_LINES",
    "NAME_COLUMNS",
    "Drops",
    "answer_names",
    "filled_names",
    "refuse_empty",
    "row_columns",
]

#: The column saying why a row could not be scored.
DROPPED_COLUMN = "dropped_reason"
#: Line numbers kept per drop reason (enough to find the pattern in a file).
FIRST_LINES = 5
#: Name columns filled from the names table when the input lacks them: (column, kind, id column).
NAME_COLUMNS: tuple[tuple[str, Kind, str], ...] = (
    ("store_name", "stores", "store_id"),
    ("product_name", "products", "product_id"),
)
#: The per-month answer's key columns, replaced by the input's own columns and `period`.
_KEY_COLUMNS = ("store_id", "product_id", "year", "month", "period")


@dataclass
class Drops:
    """Rows that could not be scored: the count per reason and each reason's first line numbers."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int | None) -> None:
        """Count one dropped row (at `line`, 1-based, the header being line 1; None: unknown)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        first = self.lines.setdefault(reason, [])
        if line is not None and len(first) < FIRST_LINES:
            first.append(line)

    def ordered(self) -> dict[str, int]:
        """The counts, most frequent reason first."""
        return dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        """`bad_date: 3 rows (lines 2, 5, 9); ...`, most frequent reason first."""
        parts = []
        for reason, count in self.ordered().items():
            lines = self.lines.get(reason, [])
            more = ", ..." if count > len(lines) else ""
            where = f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}{more})"
            parts.append(
                f"{reason}: {count} row{'s' if count != 1 else ''}{where if lines else ''}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, dict[str, object]]:
        """Per reason: `rows` and `first_lines` (for JSON answers)."""
        return {
            reason: {"rows": count, "first_lines": self.lines.get(reason, [])}
            for reason, count in self.ordered().items()
        }


def refuse_empty(rows_read: int, rows_scored: int, drops: Drops) -> None:
    """NothingToPredictError when no row is left to score (none read, or every one dropped)."""
    if rows_scored:
        return
    if not rows_read:
        raise NothingToPredictError("the file has a header but no data rows: nothing to predict")
    raise NothingToPredictError(
        f"all {rows_read} rows were dropped, nothing to predict: {drops.summary()}"
        " (a prediction file needs store_id, product_id and a YYYY-MM-DD date in every row)"
    )


def answer_names(input_columns: Sequence[str], levels: Sequence[str]) -> dict[str, str]:
    """Each answer column (`output_columns` without the keys, plus `period` and `dropped_reason`)
    and its name in the answer: `answer_<name>` when the input already has a column so named."""
    names = ["period", *output_columns(levels)[len(_KEY_COLUMNS) :], DROPPED_COLUMN]
    taken = set(input_columns)
    return {name: f"answer_{name}" if name in taken else name for name in names}


def filled_names(input_columns: Sequence[str]) -> list[tuple[str, Kind, str]]:
    """The NAME_COLUMNS the input lacks (the answer fills them from the names table)."""
    return [entry for entry in NAME_COLUMNS if entry[0] not in input_columns]


def row_columns(input_columns: Sequence[str], names: Mapping[str, str]) -> list[str]:
    """The columns of a per-row answer: the input's, the names it lacks, then the answer's
    (renamed as `names` says)."""
    filled = [column for column, _, _ in filled_names(input_columns)]
    return [*input_columns, *filled, *names.values()]
