"""Refusing a file at upload time whose every row the training would reject, with a hint at the
usual cause (dates written DD/MM/YYYY, quantities with a decimal comma), instead of storing it and
failing a Spark job minutes later."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from salesflow.errors import AllRowsRejectedError
from salesflow.sales.preview_report import Preview

__all__ = ["MIN_SAMPLED_ROWS", "all_rejected", "hint_of"]

#: A preview of only the first part of a file refuses it when at least this many rows were read
#: and all were rejected (the rest of such a file is written the same way); a complete preview
#: refuses a file of any size.
MIN_SAMPLED_ROWS = 1000

_DAY_FIRST = re.compile(r"\s*[0-9]{1,2}([/.-])[0-9]{1,2}\1[0-9]{2,4}(?:[ T].*)?\s*")
_DECIMAL_COMMA = re.compile(r"\s*[+-]?[0-9]+,[0-9]+\s*")


def all_rejected(
    preview: Preview, examples: Mapping[str, Sequence[str]]
) -> AllRowsRejectedError | None:
    """The refusal of a file whose previewed rows were all rejected; None when some row is usable
    or too few rows of a partly previewed file were read to be sure."""
    rejected = sum(preview.rejected.values())
    if preview.rows == 0 or rejected < preview.rows:
        return None
    if not preview.complete and preview.rows < MIN_SAMPLED_ROWS:
        return None
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in preview.rejected.items())
    scope = "" if preview.complete else f" of the first {preview.rows:,}"
    return AllRowsRejectedError(
        f"every row{scope} would be rejected ({reasons}), so the file was not stored: "
        f"{hint_of(examples)}"
    )


def hint_of(examples: Mapping[str, Sequence[str]]) -> str:
    """What to change, judged from a few rejected values per reason."""
    hints = []
    dates = [d for d in examples.get("bad_date", ()) if _DAY_FIRST.fullmatch(d)]
    if dates:
        hints.append(
            f"dates look like DD/MM/YYYY (e.g. {dates[0].strip()!r}); write them as YYYY-MM-DD "
            "(or YYYY-MM-DD HH:MM:SS)"
        )
    commas = [q for q in examples.get("bad_quantity", ()) if _DECIMAL_COMMA.fullmatch(q)]
    if commas:
        hints.append(
            f"quantities use a decimal comma (e.g. {commas[0].strip()!r}); write them with a "
            "decimal point"
        )
    if not hints:
        hints.append("see the preview's first rejected lines of each reason and fix those values")
    return "; ".join(hints)
