"""The curated history's ledger: which uploads the history holds, which of their Parquet folders are
live, what later uploads superseded and what was removed. Plain Python, no Spark.

    <warehouse>/curated/_ledger.json     the ledger (replaced whole, atomically)
    <warehouse>/curated/.ledger.lock     held while a writer reads, changes and replaces it
    <warehouse>/curated/daily/source_sha256=<part>/     one upload's rows per store, product, day
    <warehouse>/curated/monthly/source_sha256=<part>/   the same rows per store, product, month

Readers (Spark and pyarrow) read only the folders the ledger names, so a change made of several
new folders appears at once, when the ledger is replaced: a crash before that leaves the history as
it was (the new folders are unreferenced and removed by the next writer), a crash after leaves it
changed. A history written before the ledger existed is read as it was: every
`source_sha256=<sha>` folder with its `_source.json` manifest, one entry each; such an upload
trained month-only has no rows per day, so later uploads never replace its rows (they add up,
as they did then).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from salesflow.errors import InputError, NotFoundError

__all__ = [
    "GRAIN_FOLDERS",
    "MODES",
    "Entry",
    "Ledger",
    "Mode",
    "Supersession",
    "entry_id",
    "live_folders",
    "load",
    "locked",
    "now",
    "remove",
    "save",
]

#: What a later upload does to (store, day) cells the history already holds (README: data contract).
Mode = Literal["replace", "append", "reject"]
MODES: tuple[Mode, ...] = ("replace", "append", "reject")
#: The folder of each granularity's rows under <warehouse>/curated.
GRAIN_FOLDERS = {"day": "daily", "month": "monthly"}
LEDGER_FILE = "_ledger.json"
_LOCK_FILE = ".ledger.lock"
_MANIFEST = "_source.json"  # the manifest of a partition written before the ledger
_PREFIX = "source_sha256="


def now() -> str:
    """The ledger's timestamps: UTC, whole seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def entry_id(upload_id: str | None, sha256: str) -> str:
    """An entry's id: the upload id, or the first 16 hex digits of the file's sha256 (a file
    given to `salesflow train` directly has no upload id)."""
    return upload_id or sha256[:16]


@dataclass
class Supersession:
    """Rows of one entry that a later upload replaced (mode replace)."""

    by: str  # the later entry's id
    rows: int  # rows per store, product and day
    cells: int  # store x day cells
    stores: list[str]
    first_date: str
    last_date: str
    at: str = field(default_factory=now)


@dataclass
class Entry:
    """One upload in the history: where its live rows are and what happened to them."""

    id: str
    sha256: str
    upload_id: str | None
    url: str
    added_at: str
    mode: str
    rows_read: int = 0  # the file's data rows
    rows_rejected: int = 0
    rows: int = 0  # live rows per store, product and day (0 when wholly superseded or removed)
    rows_added: int = 0  # rows per store, product and day when it was added
    stores: list[str] = field(default_factory=list)  # stores of the live rows
    first_date: str | None = None  # the live rows' first and last day
    last_date: str | None = None
    parts: dict[str, str] = field(default_factory=dict)  # granularity -> live folder name
    superseded: list[Supersession] = field(default_factory=list)
    removed: dict[str, str] | None = None  # who, when, why

    @property
    def status(self) -> str:
        """removed, superseded (wholly), partly superseded, or live."""
        if self.removed is not None:
            return "removed"
        if self.superseded and self.rows == 0:
            return "superseded"
        return "partly superseded" if self.superseded else "live"

    @property
    def live(self) -> bool:
        """The entry has rows in the history."""
        return self.removed is None and bool(self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["superseded"] = [Supersession(**s) for s in data.get("superseded") or []]
        return cls(**fields)


@dataclass
class Ledger:
    """Every upload the history was given, in the order they were added."""

    entries: list[Entry] = field(default_factory=list)

    def find(self, ident: str) -> Entry:
        """The entry of an upload id, an entry id or a unique prefix of a sha256 (at least 8)."""
        exact = [e for e in self.entries if ident in (e.id, e.upload_id, e.sha256)]
        found = exact or (
            [e for e in self.entries if e.sha256.startswith(ident)] if len(ident) >= 8 else []
        )
        if len(found) == 1:
            return found[0]
        if not found:
            raise NotFoundError(f"no upload {ident!r} in the history; see `salesflow history`")
        raise InputError(f"{ident!r} names {len(found)} uploads: give more of the id")

    def holding(self, sha256: str) -> Entry | None:
        """The entry already holding a file with this sha256 (not removed), if any."""
        return next((e for e in self.entries if e.sha256 == sha256 and e.removed is None), None)

    def live(self) -> list[Entry]:
        return [e for e in self.entries if e.live]

    def folders(self, grain: str) -> list[str]:
        """The live folder names of one granularity, in the order their uploads were added."""
        return [e.parts[grain] for e in self.live() if grain in e.parts]

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "entries": [e.to_dict() for e in self.entries]}


def _curated(grain_root: Path) -> Path:
    return grain_root.parent


def load(curated: Path) -> Ledger:
    """The ledger of the history under `curated` (<warehouse>/curated); a history written before
    the ledger existed is read from its partitions' manifests."""
    path = curated / LEDGER_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Ledger([Entry.from_dict(e) for e in data.get("entries") or []])
    return _from_manifests(curated)


def _from_manifests(curated: Path) -> Ledger:
    """One entry per source sha256 found in the monthly or daily partitions' manifests."""
    entries: dict[str, Entry] = {}
    for grain, folder in GRAIN_FOLDERS.items():
        root = curated / folder
        if not root.is_dir():
            continue
        for manifest in sorted(root.glob(f"{_PREFIX}*/{_MANIFEST}")):
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            sha = str(meta.get("sha256") or manifest.parent.name.removeprefix(_PREFIX))
            entry = entries.get(sha) or Entry(
                id=entry_id(meta.get("upload_id"), sha),
                sha256=sha,
                upload_id=meta.get("upload_id"),
                url=str(meta.get("url") or ""),
                added_at=str(meta.get("added_at") or ""),
                mode="append",
                rows_read=int(meta.get("rows_read") or 0),
                rows_rejected=int(meta.get("rows_rejected") or 0),
                rows=int(meta.get("rows_aggregated") or 0),
                rows_added=int(meta.get("rows_aggregated") or 0),
                first_date=meta.get("first_date"),
                last_date=meta.get("last_date"),
            )
            entry.parts[grain] = manifest.parent.name.removeprefix(_PREFIX)
            entries[sha] = entry
    return Ledger(sorted(entries.values(), key=lambda e: (e.added_at, e.sha256)))


def save(curated: Path, ledger: Ledger) -> None:
    """Replace the ledger whole: written beside it, flushed, then renamed over it."""
    curated.mkdir(parents=True, exist_ok=True)
    tmp = curated / f".{LEDGER_FILE}.{secrets.token_hex(4)}"
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(ledger.to_dict(), out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, curated / LEDGER_FILE)


@contextmanager
def locked(curated: Path) -> Iterator[Ledger]:
    """The ledger, held against other writers (one process or thread at a time) until the block
    ends; a writer changes the folders, then calls `save`."""
    curated.mkdir(parents=True, exist_ok=True)
    with (curated / _LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield load(curated)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def live_folders(grain_root: Path) -> list[Path]:
    """The live partition folders of one granularity (<warehouse>/curated/monthly or daily)."""
    grain = next((g for g, f in GRAIN_FOLDERS.items() if f == grain_root.name), "month")
    ledger = load(_curated(grain_root))
    return [grain_root / f"{_PREFIX}{name}" for name in ledger.folders(grain)]


def new_part(grain_root: Path, sha256: str) -> str:
    """A folder name for new rows of the file `sha256`: the sha256 itself when free."""
    if not (grain_root / f"{_PREFIX}{sha256}").exists():
        return sha256
    return f"{sha256}-{secrets.token_hex(4)}"


def part_path(curated: Path, grain: str, name: str) -> Path:
    return curated / GRAIN_FOLDERS[grain] / f"{_PREFIX}{name}"


def sweep(curated: Path, ledger: Ledger) -> list[Path]:
    """Delete the partition folders the ledger no longer names (replaced, removed, or left by a
    crashed writer); call with the ledger locked and saved. The deleted folders."""
    gone: list[Path] = []
    for grain, folder in GRAIN_FOLDERS.items():
        keep = set(ledger.folders(grain))
        root = curated / folder
        for part in root.glob(f"{_PREFIX}*") if root.is_dir() else []:
            if part.name.removeprefix(_PREFIX) not in keep:
                shutil.rmtree(part, ignore_errors=True)
                gone.append(part)
    return gone


def remove(curated: Path, ident: str, actor: str, reason: str) -> Entry:
    """Take one upload's rows out of the history, recording who, when and why; atomic (the
    ledger is replaced whole). Rows it replaced in earlier uploads stay replaced."""
    with locked(curated) as ledger:
        entry = ledger.find(ident)
        if entry.removed is not None:
            raise InputError(f"upload {entry.id} was removed already ({entry.removed['at']})")
        entry.removed = {"by": actor, "at": now(), "reason": reason}
        entry.parts = {}
        entry.rows = 0
        save(curated, ledger)
        sweep(curated, ledger)
    return entry
