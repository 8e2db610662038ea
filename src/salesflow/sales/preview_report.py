"""The upload preview's report: `RowTally` judges complete records as the Spark job would and
counts what it finds; `Preview` is the answer it becomes.

Memory is bounded whatever the file holds: distinct ids, cached verdicts and duplicate hashes all
stop at a limit, and a count that hit its limit is named in `Preview.bounded`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from salesflow.sales.contract import REJECT_REASONS, HeaderInfo
from salesflow.sales.line_hashes import LineHashes
from salesflow.sales.rules import BLANKS, date_of, quantity_problem

__all__ = ["DELIMITER_NAMES", "PREVIEW_REASONS", "Preview", "RowTally"]

#: The Spark job's reject reasons (contract.REJECT_REASONS, in its order) and the preview's own.
PREVIEW_REASONS: tuple[str, ...] = ("wrong_field_count", *REJECT_REASONS)
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}
#: Line numbers kept per reject reason.
FIRST_LINES = 5
#: Distinct line hashes kept for duplicate detection (8 bytes each, behind a 1 MB filter: ~5 MB
#: per upload at most).
DUPLICATE_HASH_LIMIT = 500_000
#: Distinct store and product ids kept (each); real catalogues are far smaller.
DISTINCT_LIMIT = 100_000
#: Distinct date / quantity texts whose verdict is remembered (files repeat few values).
_CACHE_LIMIT = 10_000


@dataclass
class Preview:
    """What an upload's bytes look like: shape, row counts, date range and the rows Spark will reject.

    `rows` counts the data records parsed (blank lines skipped); `lines` the file's physical lines.
    `stores` and `products` count distinct non-blank ids and the dates span the valid dates, over
    rows of the right width (rejected or not). `complete` is false when only the first
    `parsed_bytes` were parsed; `bounded` names counts that hit their memory bound (so they are
    lower bounds). `rejected` and `first_rejected_lines` list only reasons that occurred, the most
    frequent first; `duplicate_rows` counts lines that repeat an earlier line exactly.
    """

    delimiter: str
    columns: list[str]
    extra_columns: list[str]
    has_bom: bool
    lines: int
    rows: int
    date_min: str | None
    date_max: str | None
    stores: int
    products: int
    duplicate_rows: int
    rejected: dict[str, int]
    first_rejected_lines: dict[str, list[int]]
    complete: bool
    parsed_bytes: int
    bounded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RowTally:
    """Counts of the records judged so far: rows, rejects by reason (with their first lines),
    distinct ids, the date range and duplicate lines."""

    def __init__(self) -> None:
        self.rows = 0
        self._rejected: dict[str, int] = {}
        self._first: dict[str, list[int]] = {}
        self._stores: set[str] = set()
        self._products: set[str] = set()
        self._date_min: str | None = None
        self._date_max: str | None = None
        self._dates: dict[str, str] = {}
        self._quantities: dict[str, str] = {}
        self.examples: dict[str, list[str]] = {}  # a few rejected values per reason (hints)
        self._hashes = LineHashes()
        self._duplicates = 0
        self._bounded: list[str] = []

    def preview(
        self, header: HeaderInfo, *, lines: int, complete: bool, parsed_bytes: int
    ) -> Preview:
        """The report of everything judged, for a file of `lines` physical lines."""
        order = {reason: i for i, reason in enumerate(PREVIEW_REASONS)}
        rejected = dict(sorted(self._rejected.items(), key=lambda kv: (-kv[1], order[kv[0]])))
        return Preview(
            delimiter=DELIMITER_NAMES.get(header.delimiter, header.delimiter),
            columns=list(header.columns),
            extra_columns=list(header.extra_columns),
            has_bom=header.has_bom,
            lines=lines,
            rows=self.rows,
            date_min=self._date_min,
            date_max=self._date_max,
            stores=len(self._stores),
            products=len(self._products),
            duplicate_rows=self._duplicates,
            rejected=rejected,
            first_rejected_lines={reason: self._first[reason] for reason in rejected},
            complete=complete,
            parsed_bytes=parsed_bytes,
            bounded=list(self._bounded),
        )

    def judge(self, columns: list[list[Any]], numbers: list[int] | None, first_line: int) -> None:
        """Judge complete records given as columns (store, product, date[, quantity]); row i
        starts on line numbers[i] (or on `first_line + i`).

        Each DISTINCT value is judged once (files repeat few values); rows are only visited one
        by one when the batch holds a bad value.
        """
        bad = [
            self._ids(set(columns[0]), self._stores, "stores"),
            self._ids(set(columns[1]), self._products, "products"),
            self._dates_of(set(columns[2])),
        ]
        if len(columns) > 3:
            bad.append(self._quantities_of(set(columns[3])))
        if not any(bad):
            return
        reasons: dict[int, str] = {}
        for values, column in zip(bad, columns, strict=False):  # in REJECT_REASONS order
            if values:
                for i, value in enumerate(column):
                    if value in values:
                        reasons.setdefault(i, values[value])  # a row gets its first reason
        for i in sorted(reasons):
            self.reject(reasons[i], numbers[i] if numbers is not None else first_line + i)

    def _example(self, bad: dict[str, str]) -> None:
        """Keep the first few rejected values of each reason (for a refusal's hint)."""
        for value, reason in sorted(bad.items()):
            kept = self.examples.setdefault(reason, [])
            if len(kept) < FIRST_LINES and value not in kept:
                kept.append(value)

    def reject(self, reason: str, line: int) -> None:
        """Count one rejected row; its line is kept if it is among the reason's first."""
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        first = self._first.setdefault(reason, [])
        if len(first) < FIRST_LINES:
            first.append(line)

    def count_duplicates(self, lines: list[str], done: int) -> None:
        """Count exact repeats among the complete lines `lines[:done]` (blank lines excluded)."""
        if "duplicate_rows" in self._bounded or done == 0:
            return
        room = DUPLICATE_HASH_LIMIT - len(self._hashes)
        complete = lines[:done] if done <= room else lines[:room]
        self._duplicates += self._hashes.add(complete)
        if len(complete) < done:
            self._bounded.append("duplicate_rows")

    def _ids(self, values: set[Any], seen: set[str], name: str) -> dict[str, str]:
        """Record distinct non-blank ids; the blank ones, each mapped to its reject reason."""
        values.discard(None)
        reason = "missing_store_id" if name == "stores" else "missing_product_id"
        cleaned = {value.strip(BLANKS) for value in values}
        if len(seen) < DISTINCT_LIMIT:
            seen.update(cleaned)
            seen.discard("")
        elif name not in self._bounded:
            self._bounded.append(name)
        if "" not in cleaned:
            return {}
        return {value: reason for value in values if not value.strip(BLANKS)}

    def _dates_of(self, values: set[Any]) -> dict[str, str]:
        """Widen the date range by the valid distinct dates; the invalid ones -> "bad_date"."""
        values.discard(None)
        cache = self._dates
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        days: set[str] = set()
        bad: dict[str, str] = {}
        for value in values:
            day = cache.get(value)
            if day is None:
                day = cache[value] = date_of(value)
            if day:
                days.add(day)
            else:
                bad[value] = "bad_date"
        if days:
            low, high = min(days), max(days)  # ISO days sort as text
            self._date_min = low if self._date_min is None else min(low, self._date_min)
            self._date_max = high if self._date_max is None else max(high, self._date_max)
        self._example(bad)
        return bad

    def _quantities_of(self, values: set[Any]) -> dict[str, str]:
        """The distinct quantity texts the Spark job would reject, each with its reason."""
        values.discard(None)
        cache = self._quantities
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        bad: dict[str, str] = {}
        joined = "".join(values)
        if joined.isdigit() and joined.isascii() and "" not in values:  # plain whole numbers only
            return bad
        for value in values:
            if value.isdigit() and value.isascii():
                continue
            problem = cache.get(value)
            if problem is None:
                problem = cache[value] = quantity_problem(value)
            if problem:
                bad[value] = problem
        self._example(bad)
        return bad
