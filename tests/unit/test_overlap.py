"""The overlap policy as a pure decision, and finding an upload in the history's ledger."""

from __future__ import annotations

import pytest

from salesflow.errors import InputError, NotFoundError, OverlapError
from salesflow.sales import ledger
from salesflow.sales.overlap import Overlap, check_mode, decide

OVERLAPS = [
    Overlap("a" * 32, 12, 6, ["s1", "s2", "s3", "s4", "s5", "s6"], "2021-01-01", "2021-01-03"),
    Overlap("b" * 16, 1, 1, ["s1"], "2021-02-01", "2021-02-01"),
]


def test_replace_and_append_say_what_they_do_to_each_overlap() -> None:
    assert [o.action for o in decide("replace", OVERLAPS, "x.csv")] == ["replaced"] * 2
    assert [o.action for o in decide("append", OVERLAPS, "x.csv")] == ["added to"] * 2
    assert decide("reject", [], "x.csv") == []


def test_reject_refuses_naming_every_overlap() -> None:
    with pytest.raises(OverlapError) as refused:
        decide("reject", OVERLAPS, "x.csv")
    message = str(refused.value)
    assert message.startswith("x.csv overlaps the history (mode reject): 12 rows of upload aaaa")
    assert "stores s1, s2, s3, s4, s5 and 1 more, 2021-01-01 to 2021-01-03, 6 store-days" in message
    assert "1 rows of upload bbbbbbbbbbbbbbbb (stores s1, 2021-02-01 to 2021-02-01" in message
    assert refused.value.code == "overlap" and refused.value.http_status == 409


def test_modes_are_checked() -> None:
    assert check_mode("append") == "append"
    with pytest.raises(InputError, match="'merge' is not one of replace, append, reject"):
        check_mode("merge")


def _entry(sha: str, upload: str | None = None) -> ledger.Entry:
    ident = ledger.entry_id(upload, sha)
    return ledger.Entry(ident, sha, upload, "u", "t", "replace", rows=5, parts={"day": sha})


def test_an_upload_is_found_by_id_or_a_long_enough_sha_prefix() -> None:
    book = ledger.Ledger([_entry("ab" * 32, "c" * 32), _entry("ab" * 16 + "cd" * 16)])
    assert book.find("c" * 32).upload_id == "c" * 32
    assert book.find("ab" * 8).id == "ab" * 8  # the second one's id: a sha256's first 16 digits
    with pytest.raises(InputError, match="names 2 uploads"):
        book.find("abababab")
    with pytest.raises(NotFoundError):
        book.find("abab")  # too short to be a prefix
    entry = book.entries[0]
    assert entry.status == "live" and book.holding(entry.sha256) is entry
    entry.superseded.append(ledger.Supersession("x", 1, 1, ["s1"], "2021-01-01", "2021-01-01"))
    assert entry.status == "partly superseded"
    entry.rows, entry.parts = 0, {}
    assert entry.status == "superseded" and book.folders("day") == ["ab" * 16 + "cd" * 16]
    entry.removed = {"by": "me", "at": "now", "reason": "why"}
    assert entry.status == "removed" and book.holding(entry.sha256) is None
    assert ledger.Entry.from_dict(entry.to_dict()) == entry
