"""The names dimension kept beside the curated history: the latest name of every store and product
id, when it took that name, and the names it had before. Plain Python, no Spark.

    <warehouse>/curated/_names.json   {"stores": {id: Name}, "products": {id: Name}}

Training adds each file's names (the name on an id's latest sale in the file) with the history's
ledger locked; readers resolve what a person typed, an id or a name, to an id.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from salesflow.errors import InputError

__all__ = ["KINDS", "Kind", "Name", "Names", "Resolved", "load", "save"]

Kind = Literal["stores", "products"]
KINDS: tuple[Kind, ...] = ("stores", "products")
NAMES_FILE = "_names.json"
#: Closest names offered when a name is unknown or ambiguous.
_SUGGESTIONS = 5
#: difflib's similarity above which a typed text counts as a misspelt name rather than an unseen id.
_CLOSE = 0.6


@dataclass
class Name:
    """One id's latest name, the day of the sale it was last seen on, the day it took that name."""

    name: str
    seen: str  # YYYY-MM-DD
    since: str  # YYYY-MM-DD: the first sale seen with this name after a different one
    previous: list[str] = field(default_factory=list)  # older names, oldest first


@dataclass(frozen=True)
class Resolved:
    """What a typed store or product resolved to: the id, and the name when a name was typed."""

    id: str
    name: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class Names:
    """Every store's and product's latest name."""

    stores: dict[str, Name] = field(default_factory=dict)
    products: dict[str, Name] = field(default_factory=dict)

    def of(self, kind: Kind) -> dict[str, Name]:
        return self.stores if kind == "stores" else self.products

    def add(self, kind: Kind, seen: Iterable[tuple[str, str, str]]) -> None:
        """Merge (id, name, day) triples: a name seen on a later day than the kept one wins."""
        kept = self.of(kind)
        for ident, name, day in seen:
            old = kept.get(ident)
            if old is None:
                kept[ident] = Name(name, day, day)
            elif day >= old.seen and name != old.name:
                kept[ident] = Name(name, day, day, [*old.previous, old.name])
            elif day >= old.seen:
                old.seen = day

    def name_of(self, kind: Kind, ident: str) -> str | None:
        found = self.of(kind).get(ident)
        return found.name if found else None

    def resolve(self, kind: Kind, text: str) -> Resolved:
        """An id as given, or the id of a unique name (case-insensitive). An ambiguous name, or a
        text close to known names that is neither an id nor a name, is refused with the closest
        names; any other text is taken as an id (an unseen one is answered as today)."""
        kept = self.of(kind)
        if text in kept or not kept:
            return Resolved(text)
        wanted = text.casefold()
        matches = sorted(i for i, n in kept.items() if n.name.casefold() == wanted)
        if len(matches) == 1:
            return Resolved(matches[0], kept[matches[0]].name)
        singular = kind[:-1]
        if matches:
            listed = ", ".join(f"{i} ({kept[i].name})" for i in matches[:_SUGGESTIONS])
            raise InputError(f"{singular} name {text!r} names {len(matches)} ids: {listed}")
        by_name = {n.name.casefold(): n.name for n in kept.values()}
        close = difflib.get_close_matches(wanted, list(by_name), _SUGGESTIONS, _CLOSE)
        if close:
            suggestions = ", ".join(
                f"{by_name[c]} ({self._ids_of(kind, by_name[c])})" for c in close
            )
            raise InputError(f"no {singular} named or with the id {text!r}; closest: {suggestions}")
        return Resolved(text)

    def _ids_of(self, kind: Kind, name: str) -> str:
        return ", ".join(sorted(i for i, n in self.of(kind).items() if n.name == name))

    def to_dict(self) -> dict[str, Any]:
        return {kind: {i: asdict(n) for i, n in self.of(kind).items()} for kind in KINDS}


def load(curated: Path) -> Names:
    """The names kept under <warehouse>/curated (empty when there are none yet)."""
    path = curated / NAMES_FILE
    if not path.is_file():
        return Names()
    data = json.loads(path.read_text(encoding="utf-8"))
    return Names(
        **{kind: {i: Name(**n) for i, n in (data.get(kind) or {}).items()} for kind in KINDS}
    )


def save(curated: Path, names: Names) -> None:
    """Replace the names file whole (written beside it, then renamed)."""
    curated.mkdir(parents=True, exist_ok=True)
    tmp = curated / f".{NAMES_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(names.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, curated / NAMES_FILE)
