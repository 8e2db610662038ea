"""How the Spark job judges one CSV value, and how csv quotes work, in plain Python.

The upload preview (salesflow.sales.preview) uses these to predict, without Spark, which rows the
training job will reject and why; tests/bad_input/test_preview_parity.py holds them to Spark's
own verdicts (salesflow.spark.transforms) on awkward values.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = ["BLANKS", "date_of", "open_quote_line", "quantity_problem"]

#: What Spark's `_text` trims from a field before judging it (a stray CR included).
BLANKS = " \t\r\n"

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?: ([0-9]{2}):([0-9]{2}):([0-9]{2}))?")
# What java.lang.Double.parseDouble (Spark's string -> double cast) reads: decimal or hex floats,
# with an optional f/d suffix. Infinity and NaN parse too, but the Spark job rejects them.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?")
_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+[fFdD]?")


def date_of(text: str) -> str:
    """`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (the Spark job's formats) as an ISO day; "" if neither."""
    match = _DATE.fullmatch(text.strip(BLANKS))
    if match is None:
        return ""
    year, month, day, hour, minute, second = match.groups()
    try:
        # Spark's calendar has a year 0 (a leap year, like 2000); Python's starts at 1.
        date(int(year) or 2000, int(month), int(day))
    except ValueError:
        return ""
    if hour is not None and (int(hour) > 23 or int(minute) > 59 or int(second) > 59):
        return ""
    return f"{year}-{month}-{day}"


def quantity_problem(text: str) -> str:
    """The reject reason of a quantity text as the Spark job decides it; "" when it is usable."""
    value_text = text.strip(BLANKS)
    if not value_text:
        return "missing_quantity"
    if _DECIMAL.fullmatch(value_text):
        value = float(value_text.rstrip("fFdD"))
    elif _HEX.fullmatch(value_text):
        value = float.fromhex(value_text.rstrip("fFdD"))
    else:
        return "bad_quantity"
    if value != value or value in (float("inf"), float("-inf")):  # overflow, e.g. 1e999
        return "bad_quantity"
    return "negative_quantity" if value < 0 else ""


def open_quote_line(lines: list[str], first_line: int, delimiter: str, strict: bool = False) -> int:
    """The line on which the quoted field still open after `lines` began (csv's own rules).

    With `strict`, 0 when no quote is open at the end; otherwise the last quote's line then.
    """
    start_field, in_field, in_quotes, quote_in_quotes = range(4)
    state, opened = start_field, 0
    for number, line in enumerate(lines, start=first_line):
        for char in line:
            if state == in_quotes:
                if char == '"':
                    state = quote_in_quotes
            elif state == quote_in_quotes:
                state = in_quotes if char == '"' else start_field if char == delimiter else in_field
            elif char == delimiter:
                state = start_field
            elif state == start_field and char == '"':
                state, opened = in_quotes, number
            else:
                state = in_field
        if state != in_quotes:
            state = start_field
    if state == in_quotes:
        return opened
    return 0 if strict else (opened or first_line)
