"""The preview's Inspector on its own: chunking never changes the answer, the byte budget, the
memory bounds, and the odd corners of CSV (bare CRs, giant lines, truncated UTF-8)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesflow.errors import FieldTooLongError, InputError, NotUtf8Error, UnterminatedQuoteError
from salesflow.sales import preview_report
from salesflow.sales.contract import check_header
from salesflow.sales.line_hashes import LineHashes
from salesflow.sales.preview import Inspector, Preview
from salesflow.sales.rules import date_of, quantity_problem
from tests.bad_input.helpers import HEADER, row

MIXED = (
    HEADER
    + row("1")
    + row("2", name='"two\nlines, and a comma"', quantity="-1")
    + b"\n"  # a blank line: skipped, not a row
    + row("3", date="2024-02-30")
    + row("1")
    + b"5,x\n"
    + row("6", store="", quantity="1.5e1")
    + row("7", quantity="ten", date="2024-03-01 23:59:59")
)


def inspect(content: bytes, *, step: int | None = None, max_bytes: int = 10**9) -> Preview:
    inspector = Inspector(check_header(content[:65536]), max_bytes, max_field_bytes=4096)
    step = step or len(content) or 1
    for start in range(0, len(content), step):
        inspector.feed(content[start : start + step])
    return inspector.finish()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1000])
def test_any_chunking_gives_the_same_preview(step: int) -> None:
    assert inspect(MIXED, step=step) == inspect(MIXED)


def test_preview_of_a_mixed_file() -> None:
    preview = inspect(MIXED)
    assert (preview.lines, preview.rows, preview.duplicate_rows) == (10, 7, 1)
    assert preview.rejected == {
        "negative_quantity": 1,
        "bad_date": 1,
        "wrong_field_count": 1,
        "missing_store_id": 1,
        "bad_quantity": 1,
    }
    assert preview.first_rejected_lines == {
        "negative_quantity": [3],
        "bad_date": [6],
        "wrong_field_count": [8],
        "missing_store_id": [9],
        "bad_quantity": [10],
    }
    assert (preview.date_min, preview.date_max) == ("2024-01-01", "2024-03-01")
    assert (preview.stores, preview.products) == (1, 5)
    assert preview.complete and preview.parsed_bytes == len(MIXED)


def test_quote_free_fast_path_agrees_with_the_csv_path() -> None:
    """The same rows with and without a (harmless) quoted field take both parsing paths."""
    rows = [
        row(str(i % 50), quantity=str(i % 7 - 1), date=f"2024-01-{i % 40:02d}") for i in range(500)
    ]
    plain = HEADER + b"".join(rows)
    quoted = HEADER + rows[0].replace(b"Widget", b'"Widget"') + b"".join(rows[1:])
    a, b = inspect(plain, step=4096), inspect(quoted, step=4096)
    assert a.rejected == b.rejected and a.first_rejected_lines == b.first_rejected_lines
    assert (a.rows, a.duplicate_rows, a.stores, a.products) == (b.rows, b.duplicate_rows, 1, 50)
    assert set(a.rejected) == {"negative_quantity", "bad_date"}


def test_beyond_the_byte_budget_lines_are_only_counted() -> None:
    content = HEADER + row("1") * 1000 + row("2", quantity="bad")
    preview = inspect(content, step=100, max_bytes=len(HEADER) + 10 * len(row("1")))
    assert preview.complete is False
    assert preview.lines == 1002
    assert preview.rows == 10 and preview.rejected == {}  # the bad last line was never parsed
    assert preview.parsed_bytes == len(HEADER) + 10 * len(row("1"))


def test_a_zero_budget_still_checks_utf8() -> None:
    with pytest.raises(NotUtf8Error, match="byte offset 109"):
        inspect(HEADER + row("1") + b"\xff\n", max_bytes=0)


def test_duplicate_bound_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_report, "DUPLICATE_HASH_LIMIT", 10)
    preview = inspect(HEADER + b"".join(row(str(i)) for i in range(20)) + row("1"))
    assert preview.bounded == ["duplicate_rows"]
    assert preview.duplicate_rows == 0  # the repeat came after the bound: a lower bound


@pytest.mark.parametrize("run", [2, 5, 64])
def test_duplicates_are_found_across_sealed_runs(monkeypatch: pytest.MonkeyPatch, run: int) -> None:
    """Small runs: repeats of lines already moved into sorted runs (and of blank lines) still count
    the same as a plain set of the lines would."""
    monkeypatch.setattr(LineHashes, "RUN", run)
    lines = [row(str(i % 37), quantity=str(i % 3)) for i in range(300)] + [b"\n"] * 3
    preview = inspect(HEADER + b"".join(lines), step=97)
    data = [line for line in lines if line.strip()]
    assert preview.duplicate_rows == len(data) - len(set(data)) > 0
    assert preview.bounded == []


def test_truncated_utf8_at_the_end() -> None:
    content = HEADER + row("1", name="caf\xe9").rstrip(b"\n")[:-1] + "é".encode()[:1]
    with pytest.raises(NotUtf8Error, match=f"byte offset {len(content) - 1} \\(line 2\\)"):
        inspect(content, step=5)


def test_bare_cr_in_a_field_is_a_malformed_row() -> None:
    content = HEADER + row("1") + b"2,Wid\rget,2.50,7,Main St,3,2024-01-01\n" + row("3")
    preview = inspect(content)
    assert preview.rows == 3
    assert preview.first_rejected_lines == {"wrong_field_count": [3]}


def test_a_giant_line_without_quotes_is_refused() -> None:
    content = HEADER + row("1") + b"," * 40_000 + b"\n"
    with pytest.raises(FieldTooLongError, match="line 3 is longer than"):
        inspect(content, step=1000)


def test_quote_opened_late_in_a_long_file_names_its_line() -> None:
    content = HEADER + row("1") * 10 + row("2", name='"never closed') + row("3") * 5
    with pytest.raises(UnterminatedQuoteError, match="quote opened on line 12 is never closed"):
        inspect(content, step=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-05", "2024-01-05"),
        (" 2024-01-05\r", "2024-01-05"),
        ("2024-01-05 23:59:59", "2024-01-05"),
        ("2024-01-05 24:00:00", ""),
        ("2024-02-29", "2024-02-29"),
        ("2023-02-29", ""),
        ("0000-02-29", "0000-02-29"),  # Spark's proleptic calendar has a (leap) year 0
        ("2024-1-5", ""),
        ("05/01/2024", ""),
        ("2024-01-05T10:00:00", ""),
        ("\uff12\uff10\uff12\uff14-01-05", ""),  # full-width digits: not digits to Spark
    ],
)
def test_date_of(text: str, expected: str) -> None:
    assert date_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", ""),
        (" 3 ", ""),
        ("1.5", ""),
        (".5", ""),
        ("1e3", ""),
        ("2d", ""),
        ("0x1p3", ""),
        ("-0", ""),
        ("", "missing_quantity"),
        ("  ", "missing_quantity"),
        ("-1", "negative_quantity"),
        ("NaN", "bad_quantity"),
        ("Infinity", "bad_quantity"),
        ("1e999", "bad_quantity"),
        ("1,5", "bad_quantity"),
        ("1_000", "bad_quantity"),
        ("\u0663", "bad_quantity"),  # an Arabic-Indic digit
    ],
)
def test_quantity_problem(text: str, expected: str) -> None:
    assert quantity_problem(text) == expected


#: Characters that make CSV hard: quotes, delimiters, line ends, digits, dates, multi-byte text.
_AWKWARD = st.sampled_from([",", '"', "\n", "\r", "\r\n", ";", "\t", " ", "-", "1", "7", "x", "é"])
_DATES = st.sampled_from(["2024-01-05", "2024-13-01", "2024-01-05 10:00:00", ""])


@settings(max_examples=300, deadline=None, database=None)
@given(
    pieces=st.lists(st.one_of(_AWKWARD, _DATES, st.binary(max_size=3)), max_size=200),
    step=st.integers(1, 64),
)
def test_any_input_gives_a_preview_or_an_input_error(pieces: list[Any], step: int) -> None:
    """Whatever follows the header: a Preview or an InputError (never another exception), and
    the same outcome however the bytes are chunked."""
    content = HEADER + b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces)

    def outcome(chunk: int | None) -> Any:
        try:
            return inspect(content, step=chunk)
        except InputError as exc:
            return (type(exc), str(exc))

    assert outcome(step) == outcome(None)


def test_an_empty_quantity_among_whole_numbers_is_missing() -> None:
    preview = inspect(HEADER + row("1", quantity="3") + row("2", quantity="") + row("3"))
    assert preview.first_rejected_lines == {"missing_quantity": [3]}
