"""The upload preview's record splitting: decoded text in, complete CSV records out.

`RecordSplitter` keeps an unfinished record (or a partial line) pending until the text that ends
it arrives, refuses text that outgrows any valid record (a quote never closed, a giant line), and
hands each batch of complete records, as the judged columns, to a `RowTally`.
"""

from __future__ import annotations

import csv
from operator import itemgetter
from typing import Any

from salesflow.errors import FieldTooLongError, UnterminatedQuoteError
from salesflow.sales.contract import HeaderInfo
from salesflow.sales.preview_report import RowTally
from salesflow.sales.rules import open_quote_line

__all__ = ["JUDGED_COLUMNS", "RecordSplitter"]

#: The columns a record is judged by, in REJECT_REASONS order; prediction input may lack quantity.
JUDGED_COLUMNS = ("store_id", "product_id", "date", "quantity")
#: A quoted field costs 3 characters more than its text (two quotes and a delimiter).
_FIELD_OVERHEAD = 3


class RecordSplitter:
    """Cuts text into records (the header line skipped) and has `tally` judge them.

    `pending` is the text not judged yet, starting on physical line `pending_line` (1-based).
    """

    def __init__(self, header: HeaderInfo, tally: RowTally, *, max_field_bytes: int) -> None:
        self.tally = tally
        self.max_field_bytes = max_field_bytes
        self._delimiter = header.delimiter
        self._width = len(header.columns)
        self._at = tuple(header.columns.index(c) for c in JUDGED_COLUMNS if c in header.columns)
        # A record waiting for its end can legitimately hold this many characters at most.
        self.max_record = (max_field_bytes + _FIELD_OVERHEAD) * (self._width + 1)
        self._in_header = True
        self.pending = ""  # text not parsed yet: an unfinished record and/or a partial line
        self.pending_line = 1  # physical line number where `pending` starts

    def parse(self, text: str, *, final: bool = False) -> None:
        """Parse every complete record of `pending + text`; keep the unfinished rest pending."""
        buffer = self.pending + text if self.pending else text
        if self._in_header:
            end = buffer.find("\n")
            if end < 0:  # contract.check_header already bounds the header line's length
                self.pending = buffer
                return
            buffer, self._in_header, self.pending_line = buffer[end + 1 :], False, 2
        if final:
            block, rest = (buffer if buffer.endswith("\n") or not buffer else buffer + "\n"), ""
        else:
            cut = buffer.rfind("\n") + 1
            block, rest = buffer[:cut], buffer[cut:]
        # `lines` ends with "" (what follows the block's last newline): a sentinel that an
        # unfinished quoted record swallows, which tells an incomplete record from a complete one.
        lines = block.split("\n")
        longest = max(map(len, lines))
        if longest > self.max_record:
            index = next(i for i, x in enumerate(lines) if len(x) > self.max_record)
            raise self._too_long(lines[index : index + 1], self.pending_line + index)
        done = self._records(block, lines, longest)
        self.tally.count_duplicates(lines, done)
        unfinished = lines[done:-1]
        self.pending = "".join(line + "\n" for line in unfinished) + rest
        first_unparsed = self.pending_line + done
        self.pending_line = first_unparsed
        if final and unfinished:
            line = open_quote_line(unfinished, first_unparsed, self._delimiter)
            raise UnterminatedQuoteError(f"quote opened on line {line} is never closed")
        if len(self.pending) > self.max_record:
            raise self._too_long(self.pending.split("\n"), self.pending_line)

    def _too_long(self, lines: list[str], first_line: int) -> FieldTooLongError:
        """The error for text that outgrew any valid record: an endless quoted field or a giant
        line (`lines` start at `first_line`)."""
        opened = open_quote_line(lines, first_line, self._delimiter, strict=True)
        if opened:
            return FieldTooLongError(
                f"line {opened}: a quoted field runs past the limit of {self.max_field_bytes} "
                "bytes (is its closing quote missing?)"
            )
        return FieldTooLongError(
            f"line {first_line} is longer than {self.max_record} characters; "
            f"fields are limited to {self.max_field_bytes} bytes"
        )

    def _records(self, block: str, lines: list[str], longest: int) -> int:
        """Judge the records of `block` (split into `lines`, the last one the sentinel); the index
        of the first line of an unfinished record, or len(lines) - 1 when all are complete."""
        real, width, delimiter = len(lines) - 1, self._width, self._delimiter
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
                self.tally.rows += real
                self.tally.judge([fields[k:stop:width] for k in self._at], None, self.pending_line)
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
                        self._check_fields(rows[i], self.pending_line + i)
            self.tally.judge(self._columns(rows, None), None, self.pending_line)
            return real
        return self._records_one_by_one(lines)

    def _records_one_by_one(self, lines: list[str]) -> int:
        """`_records` for batches with multi-line quoted records or csv errors (rare)."""
        real, start, done = len(lines) - 1, 0, len(lines) - 1
        rows: list[Any] = []
        numbers: list[int] = []
        quarter = self.max_field_bytes // 4
        while start < real:
            reader = csv.reader(lines[start:], delimiter=self._delimiter)
            previous = 0
            try:
                for row in reader:
                    end = reader.line_num
                    if start + end > real:  # ran into the sentinel: unfinished unless it is it
                        done = real if start + previous == real else start + previous
                        break
                    line = self.pending_line + start + previous
                    if end - previous > 1 or len(lines[start + previous]) > quarter:
                        self._check_fields(row, line)
                    rows.append(row)
                    numbers.append(line)
                    previous = end
                break
            except csv.Error as exc:
                bad = start + max(reader.line_num, 1)
                line = self.pending_line + bad - 1
                if "field limit" in str(exc):  # Python's own 128 KiB cap: over ours too
                    raise FieldTooLongError(
                        f"line {line}: a field is over the limit of {self.max_field_bytes} bytes"
                    ) from None
                # A bare CR inside an unquoted field: count the record as malformed, go on after it.
                rows.append(["malformed"])
                numbers.append(line)
                start = bad
        self.tally.judge(self._columns(rows, numbers), numbers, self.pending_line)
        return done

    def _columns(self, rows: list[Any], numbers: list[int] | None) -> list[list[Any]]:
        """Count the records and reject those of the wrong width; the judged columns (a skipped
        row holds None in each: blank lines are skipped, as Spark does)."""
        width, tally = self._width, self.tally
        if set(map(len, rows)) - {width}:
            skip = (None,) * width
            for i, row in enumerate(rows):
                if len(row) != width:
                    if row:
                        tally.rows += 1
                        line = numbers[i] if numbers is not None else self.pending_line + i
                        tally.reject("wrong_field_count", line)
                    rows[i] = skip
            tally.rows += sum(1 for row in rows if row is not skip)
        else:
            tally.rows += len(rows)
        return [list(map(itemgetter(k), rows)) for k in self._at]

    def _check_fields(self, row: list[str], line: int) -> None:
        limit = self.max_field_bytes
        for value in row:
            if len(value) > limit // 4 and (size := len(value.encode("utf-8"))) > limit:
                raise FieldTooLongError(
                    f"line {line}: a field of {size} bytes is over the limit of {limit} bytes"
                )
