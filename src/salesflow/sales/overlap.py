"""The overlap policy: what a new upload does to (store, day) cells the history already holds.

    replace (default)   the new rows supersede the earlier uploads' rows of the cells it covers
    append              the new rows add to what is there (feeds cut into increments)
    reject              an upload covering any held cell is refused before training

`decide` is a pure function of the mode and what the upload overlaps (computed by
salesflow.spark.history_write), returning what to do or raising `OverlapError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from salesflow.errors import InputError, OverlapError
from salesflow.sales.ledger import MODES, Mode

__all__ = ["Overlap", "check_mode", "decide", "describe"]

#: Stores named in a message before "and N more".
_STORES_SHOWN = 5


@dataclass(frozen=True)
class Overlap:
    """The rows of one earlier upload lying in cells the new upload covers."""

    upload: str  # the earlier entry's id
    rows: int  # its rows per store, product and day in those cells
    cells: int  # store x day cells shared
    stores: list[str]
    first_date: str
    last_date: str
    action: str = ""  # "replaced" or "added to" once decided

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_mode(mode: str) -> Mode:
    """`mode` as a Mode; an InputError naming the choices otherwise."""
    for known in MODES:
        if mode == known:
            return known
    raise InputError(f"history mode {mode!r} is not one of {', '.join(MODES)}")


def _stores(stores: list[str]) -> str:
    shown = ", ".join(stores[:_STORES_SHOWN])
    more = len(stores) - _STORES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def describe(overlap: Overlap) -> str:
    """One overlap in a sentence's words."""
    return (
        f"{overlap.rows} rows of upload {overlap.upload} (stores {_stores(overlap.stores)}, "
        f"{overlap.first_date} to {overlap.last_date}, {overlap.cells} store-days)"
    )


def decide(mode: Mode, overlaps: list[Overlap], name: str) -> list[Overlap]:
    """The overlaps with the action `mode` takes on each; `reject` refuses any overlap of the
    upload `name` with an OverlapError naming it."""
    if mode == "reject" and overlaps:
        found = "; ".join(describe(o) for o in overlaps)
        raise OverlapError(
            f"{name} overlaps the history (mode reject): {found}. Upload it with mode replace to "
            "supersede those rows, append to add to them, or remove the earlier upload first"
        )
    action = "replaced" if mode == "replace" else "added to"
    return [Overlap(**{**o.to_dict(), "action": action}) for o in overlaps]
