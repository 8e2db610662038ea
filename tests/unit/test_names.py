"""The names dimension: the latest name per id wins, older names are kept, and what a person typed
resolves to one id or is refused with the closest names."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.errors import InputError
from salesflow.sales import names


def _names() -> names.Names:
    found = names.Names()
    found.add("stores", [("s1", "Giant", "2021-01-05"), ("s2", "Aziza", "2021-01-03")])
    found.add("stores", [("s3", "MG", "2021-01-01"), ("s4", "mg", "2021-01-02")])
    return found


def test_the_latest_name_wins_and_the_older_ones_are_kept(tmp_path: Path) -> None:
    found = _names()
    found.add("stores", [("s1", "Giant Mall", "2021-02-01"), ("s2", "Old Aziza", "2020-12-31")])
    giant, aziza = found.stores["s1"], found.stores["s2"]
    assert (giant.name, giant.since, giant.previous) == ("Giant Mall", "2021-02-01", ["Giant"])
    assert (aziza.name, aziza.seen) == ("Aziza", "2021-01-03")  # an older file's name loses
    found.add("stores", [("s1", "Giant Mall", "2021-03-01")])
    assert (found.stores["s1"].seen, found.stores["s1"].since) == ("2021-03-01", "2021-02-01")
    names.save(tmp_path, found)
    assert names.load(tmp_path) == found
    assert names.load(tmp_path / "nowhere") == names.Names()


def test_ids_and_unique_names_resolve_and_others_are_refused_with_the_closest() -> None:
    found = _names()
    assert found.resolve("stores", "s1") == names.Resolved("s1")
    assert found.resolve("stores", "giant") == names.Resolved("s1", "Giant")
    with pytest.raises(InputError, match=r"'MG' names 2 ids: s3 \(MG\), s4 \(mg\)"):
        found.resolve("stores", "MG")
    with pytest.raises(InputError, match=r"no store named or with the id 'Gaint'; closest: Giant"):
        found.resolve("stores", "Gaint")
    # Neither an id, a name nor close to one: an unseen id, answered as such.
    assert found.resolve("stores", "0f3a9c") == names.Resolved("0f3a9c")
    assert names.Names().resolve("products", "Giant") == names.Resolved("Giant")
