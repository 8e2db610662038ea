"""A streaming, pure-Python inspection of a sales CSV: the preview an upload answers with.

`Inspector` is fed the file's bytes as they stream into storage and never holds more than one
record. It checks that the file is UTF-8 and that its quoting and field sizes are sane (fatal
problems raise `InputError`s that name the line or byte offset, so the upload is refused before
anything is stored), and it counts what the Spark job will think of the rows: the same reject
reasons, plus `wrong_field_count`. Python parses far slower than storage streams, so rows are only
parsed in the first `max_bytes` of a file; beyond them lines are counted and UTF-8 is still checked.
"""

from __future__ import annotations

import codecs
import csv
from array import array
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any

from salesflow.errors import (
    FieldTooLongError,
    NoRowsError,
    NotUtf8Error,
    UnterminatedQuoteError,
)
from salesflow.sales.contract import REJECT_REASONS, HeaderInfo
from salesflow.sales.rules import BLANKS, date_of, open_quote_line, quantity_problem

# date_of and quantity_problem live in csv_rules; they are re-exported here for existing callers.
__all__ = [
    "DELIMITER_NAMES",
    "PREVIEW_REASONS",
    "Inspector",
    "Preview",
    "date_of",
    "quantity_problem",
]

#: The Spark job's reject reasons (schema.REJECT_REASONS, in its order) and the preview's own.
PREVIEW_REASONS: tuple[str, ...] = ("wrong_field_count", *REJECT_REASONS)
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}
#: Line numbers kept per reject reason.
FIRST_LINES = 5
#: Distinct line hashes kept for duplicate detection (8 bytes each, behind a 1 MB filter: ~5 MB
#: per upload at most).
DUPLICATE_HASH_LIMIT = 500_000
#: Text parsed at once: its transient lists of lines and fields take ~10x its size. 128 KiB
#: rather than 256: the upload service's peak RSS to S3 3-6 MB lower (50 MB uploads, the smoke
#: bench), for ~4% more of the preview's CPU (0.39 s vs 0.37 s for 16 MB parsed).
PIECE_BYTES = 128 * 1024
#: Distinct store and product ids kept (each); real catalogues are far smaller.
DISTINCT_LIMIT = 100_000
#: Distinct date / quantity texts whose verdict is remembered (files repeat few values).
_CACHE_LIMIT = 10_000
#: A quoted field costs 3 characters more than its text (two quotes and a delimiter).
_FIELD_OVERHEAD = 3


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


class Inspector:
    """Feed a file's bytes (header included) with `feed`, then call `finish` for its `Preview`.

    Raises NotUtf8Error, UnterminatedQuoteError, FieldTooLongError or NoRowsError (from `finish`).
    Line numbers are 1-based physical lines of the file; the header is line 1.
    """

    def __init__(self, header: HeaderInfo, max_bytes: int, *, max_field_bytes: int = 4096) -> None:
        self.header = header
        self.max_bytes = max_bytes
        self.max_field_bytes = max_field_bytes
        self._width = len(header.columns)
        # The judged columns, in REJECT_REASONS order; prediction input may lack the quantity.
        judged = ("store_id", "product_id", "date", "quantity")
        self._at = tuple(header.columns.index(c) for c in judged if c in header.columns)
        # A record waiting for its end can legitimately hold this many characters at most.
        self._max_record = (max_field_bytes + _FIELD_OVERHEAD) * (self._width + 1)
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._size = 0
        self._newlines = 0
        self._last_byte = b""
        self._parsing = max_bytes > 0
        self._in_header = True
        self._pending = ""  # text not parsed yet: an unfinished record and/or a partial line
        self._pending_line = 1  # physical line number where `_pending` starts
        self._parsed_bytes = 0
        self._rows = 0
        self._rejected: dict[str, int] = {}
        self._first: dict[str, list[int]] = {}
        self._stores: set[str] = set()
        self._products: set[str] = set()
        self._date_min: str | None = None
        self._date_max: str | None = None
        self._dates: dict[str, str] = {}
        self._quantities: dict[str, str] = {}
        self._hashes = _LineHashes()
        self._duplicates = 0
        self._bounded: list[str] = []

    # --- bytes in --------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Inspect the next bytes of the file."""
        if self._parsing and len(chunk) > PIECE_BYTES:
            for start in range(0, len(chunk), PIECE_BYTES):
                self._feed(chunk[start : start + PIECE_BYTES])
        else:
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        held = self._decoder.getstate()[0]
        if not self._parsing and not held and chunk.isascii():
            text = ""  # only counting, and ASCII is valid UTF-8: no need to decode
        else:
            try:
                text = self._decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise self._not_utf8(held + chunk, exc.start, self._size - len(held)) from None
        self._size += len(chunk)
        self._newlines += chunk.count(b"\n")
        self._last_byte = chunk[-1:]
        if not self._parsing:
            return
        room = self.max_bytes - self._parsed_bytes - len(self._pending)
        if len(text) <= room:
            self._parse(text)
            return
        room = max(room, 0)
        self._parse(text[:room])  # the rest of the budget, then only counting
        self._parsed_bytes -= len(text[room:].encode("utf-8"))  # fed, but not parsed
        self._parsing = False
        self._pending = ""

    def finish(self) -> Preview:
        """The preview of everything fed; raises if the file ends badly or has no data rows."""
        held = self._decoder.getstate()[0]
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise self._not_utf8(held, exc.start, self._size - len(held)) from None
        if self._parsing:
            self._parse("", final=True)
        complete = self._parsing
        if complete and self._rows == 0:
            raise NoRowsError("the file has a header but no data rows")
        lines = self._newlines + (1 if self._last_byte not in (b"", b"\n") else 0)
        order = {reason: i for i, reason in enumerate(PREVIEW_REASONS)}
        rejected = dict(sorted(self._rejected.items(), key=lambda kv: (-kv[1], order[kv[0]])))
        return Preview(
            delimiter=DELIMITER_NAMES.get(self.header.delimiter, self.header.delimiter),
            columns=list(self.header.columns),
            extra_columns=list(self.header.extra_columns),
            has_bom=self.header.has_bom,
            lines=lines,
            rows=self._rows,
            date_min=self._date_min,
            date_max=self._date_max,
            stores=len(self._stores),
            products=len(self._products),
            duplicate_rows=self._duplicates,
            rejected=rejected,
            first_rejected_lines={reason: self._first[reason] for reason in rejected},
            complete=complete,
            parsed_bytes=self._size if complete else self._parsed_bytes,
            bounded=list(self._bounded),
        )

    def _not_utf8(self, data: bytes, start: int, base: int) -> NotUtf8Error:
        """The error for an invalid byte at `data[start]`, `data` being the file from offset `base`
        (the decoder's held bytes, which hold no newline, then the bytes not yet counted)."""
        offset = base + start
        line = self._newlines + data[:start].count(b"\n") + 1
        return NotUtf8Error(
            f"invalid UTF-8 at byte offset {offset} (line {line}); save the file as UTF-8"
        )

    # --- text to records -------------------------------------------------------------------------

    def _parse(self, text: str, *, final: bool = False) -> None:
        """Parse every complete record of `_pending + text`; keep the unfinished rest pending."""
        buffer = self._pending + text if self._pending else text
        if self._in_header:
            end = buffer.find("\n")
            if end < 0:  # schema.check_header already bounds the header line's length
                self._pending = buffer
                return
            buffer, self._in_header, self._pending_line = buffer[end + 1 :], False, 2
        if final:
            block, rest = (buffer if buffer.endswith("\n") or not buffer else buffer + "\n"), ""
        else:
            cut = buffer.rfind("\n") + 1
            block, rest = buffer[:cut], buffer[cut:]
        # `lines` ends with "" (what follows the block's last newline): a sentinel that an
        # unfinished quoted record swallows, which tells an incomplete record from a complete one.
        lines = block.split("\n")
        longest = max(map(len, lines))
        if longest > self._max_record:
            index = next(i for i, x in enumerate(lines) if len(x) > self._max_record)
            raise self._too_long(lines[index : index + 1], self._pending_line + index)
        done = self._records(block, lines, longest)
        self._count_duplicates(lines, done)
        unfinished = lines[done:-1]
        self._pending = "".join(line + "\n" for line in unfinished) + rest
        first_unparsed = self._pending_line + done
        self._pending_line = first_unparsed
        if final and unfinished:
            line = open_quote_line(unfinished, first_unparsed, self.header.delimiter)
            raise UnterminatedQuoteError(f"quote opened on line {line} is never closed")
        if len(self._pending) > self._max_record:
            raise self._too_long(self._pending.split("\n"), self._pending_line)
        self._parsed_bytes = (
            self._size - len(self._decoder.getstate()[0]) - len(self._pending.encode("utf-8"))
        )

    def _too_long(self, lines: list[str], first_line: int) -> FieldTooLongError:
        """The error for text that outgrew any valid record: an endless quoted field or a giant
        line (`lines` start at `first_line`)."""
        opened = open_quote_line(lines, first_line, self.header.delimiter, strict=True)
        if opened:
            return FieldTooLongError(
                f"line {opened}: a quoted field runs past the limit of {self.max_field_bytes} "
                "bytes (is its closing quote missing?)"
            )
        return FieldTooLongError(
            f"line {first_line} is longer than {self._max_record} characters; "
            f"fields are limited to {self.max_field_bytes} bytes"
        )

    def _records(self, block: str, lines: list[str], longest: int) -> int:
        """Judge the records of `block` (split into `lines`, the last one the sentinel); the index
        of the first line of an unfinished record, or len(lines) - 1 when all are complete."""
        real, width, delimiter = len(lines) - 1, self._width, self.header.delimiter
        if real == 0:
            return 0
        quarter = self.max_field_bytes // 4  # a character is at most 4 UTF-8 bytes
        plain = '"' not in block and (
            "\r" not in block or block.count("\r") == block.count("\r\n")  # no bare CR
        )
        if plain and longest <= quarter and block.count(delimiter) == (width - 1) * real:
            # No quotes: split the whole block at once. With a delimiter after every newline each
            # line-final field ends in "\n"; if every width-th field does, every line has `width`.
            fields = block.replace("\n", "\n" + delimiter).split(delimiter)
            stop = width * real
            if "".join(fields[width - 1 : stop : width]).count("\n") == real:
                self._rows += real
                self._judge([fields[k:stop:width] for k in self._at], None)
                return real
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            rows: list[Any] = list(reader)
        except csv.Error:
            rows = []
        if rows and rows[-1] == [] and reader.line_num == len(rows):
            # One record per line, the sentinel read as a blank line.
            rows.pop()
            if longest > quarter:
                for i, line in enumerate(lines[:real]):
                    if len(line) > quarter:
                        self._check_fields(rows[i], self._pending_line + i)
            self._judge(self._columns(rows, None), None)
            return real
        return self._records_one_by_one(lines)

    def _records_one_by_one(self, lines: list[str]) -> int:
        """`_records` for batches with multi-line quoted records or csv errors (rare)."""
        real, start, done = len(lines) - 1, 0, len(lines) - 1
        rows: list[Any] = []
        numbers: list[int] = []
        quarter = self.max_field_bytes // 4
        while start < real:
            reader = csv.reader(lines[start:], delimiter=self.header.delimiter)
            previous = 0
            try:
                for row in reader:
                    end = reader.line_num
                    if start + end > real:  # ran into the sentinel: unfinished unless it is it
                        done = real if start + previous == real else start + previous
                        break
                    line = self._pending_line + start + previous
                    if end - previous > 1 or len(lines[start + previous]) > quarter:
                        self._check_fields(row, line)
                    rows.append(row)
                    numbers.append(line)
                    previous = end
                break
            except csv.Error as exc:
                bad = start + max(reader.line_num, 1)
                line = self._pending_line + bad - 1
                if "field limit" in str(exc):  # Python's own 128 KiB cap: over ours too
                    raise FieldTooLongError(
                        f"line {line}: a field is over the limit of {self.max_field_bytes} bytes"
                    ) from None
                # A bare CR inside an unquoted field: count the record as malformed, go on after it.
                rows.append(["malformed"])
                numbers.append(line)
                start = bad
        self._judge(self._columns(rows, numbers), numbers)
        return done

    def _columns(self, rows: list[Any], numbers: list[int] | None) -> list[list[Any]]:
        """Count the records and reject those of the wrong width; the judged columns (a skipped
        row holds None in each: blank lines are skipped, as Spark does)."""
        width = self._width
        if set(map(len, rows)) - {width}:
            skip = (None,) * width
            for i, row in enumerate(rows):
                if len(row) != width:
                    if row:
                        self._rows += 1
                        line = numbers[i] if numbers is not None else self._pending_line + i
                        self._reject("wrong_field_count", line)
                    rows[i] = skip
            self._rows += sum(1 for row in rows if row is not skip)
        else:
            self._rows += len(rows)
        return [list(map(itemgetter(k), rows)) for k in self._at]

    def _judge(self, columns: list[list[Any]], numbers: list[int] | None) -> None:
        """Judge complete records given as columns (store, product, date[, quantity]); row i
        starts on line numbers[i] (or on `_pending_line + i`).

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
        first = self._pending_line
        for i in sorted(reasons):
            self._reject(reasons[i], numbers[i] if numbers is not None else first + i)

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
        return bad

    def _check_fields(self, row: list[str], line: int) -> None:
        limit = self.max_field_bytes
        for value in row:
            if len(value) > limit // 4 and (size := len(value.encode("utf-8"))) > limit:
                raise FieldTooLongError(
                    f"line {line}: a field of {size} bytes is over the limit of {limit} bytes"
                )

    def _reject(self, reason: str, line: int) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        first = self._first.setdefault(reason, [])
        if len(first) < FIRST_LINES:
            first.append(line)

    def _count_duplicates(self, lines: list[str], done: int) -> None:
        """Count exact repeats among the complete lines `lines[:done]` (blank lines excluded)."""
        if "duplicate_rows" in self._bounded or done == 0:
            return
        room = DUPLICATE_HASH_LIMIT - len(self._hashes)
        complete = lines[:done] if done <= room else lines[:room]
        self._duplicates += self._hashes.add(complete)
        if len(complete) < done:
            self._bounded.append("duplicate_rows")


class _LineHashes:
    """The hashes of distinct lines seen, in ~9 bytes a line where a Python set of ints takes ~70:
    sorted runs of 8-byte ints (`array("q")`) behind a 1 MB bit filter, and a set of the newest that
    becomes a run when it fills. Pure Python on purpose: numpy would add ~20 MB to the upload
    service's memory for this alone.
    """

    #: Hashes collected in the set before they become a sorted run.
    RUN = 16_384
    #: Bits of the filter, indexed by a hash's low bits: a clear bit spares searching the runs
    #: (with 190k hashes, 16 MB of lines, ~98% of new lines are decided by it).
    FILTER_BITS = 1 << 23
    #: Blank lines are never duplicates.
    BLANK = frozenset({hash(""), hash("\r")})

    def __init__(self) -> None:
        self._runs: list[array[int]] = []
        self._in_runs = 0
        self._filter = bytearray(self.FILTER_BITS // 8)
        self._new: set[int] = set()

    def __len__(self) -> int:
        return self._in_runs + len(self._new)

    def add(self, lines: list[str]) -> int:
        """Remember the lines; how many repeated a line seen before (or earlier in `lines`)."""
        hashes = [value for value in map(hash, lines) if value not in self.BLANK]
        distinct = set(hashes) - self._new
        if self._runs:
            bits, mask = self._filter, self.FILTER_BITS - 1
            distinct -= {
                value
                for value in distinct
                if bits[(value & mask) >> 3] >> (value & 7) & 1 and self._in_a_run(value)
            }
        self._new |= distinct
        if len(self._new) >= self.RUN:
            self._seal()
        return len(hashes) - len(distinct)

    def _in_a_run(self, value: int) -> bool:
        """Whether a sorted run holds `value` (a binary search in C per run)."""
        for run in self._runs:
            at = bisect_left(run, value)
            if at < len(run) and run[at] == value:
                return True
        return False

    def _seal(self) -> None:
        """The newest hashes become a sorted run, their bits set in the filter."""
        bits, mask = self._filter, self.FILTER_BITS - 1
        for value in self._new:
            bits[(value & mask) >> 3] |= 1 << (value & 7)
        self._runs.append(array("q", sorted(self._new)))
        self._in_runs += len(self._new)
        self._new = set()
