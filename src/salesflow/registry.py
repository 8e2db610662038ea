"""Model versions on disk: immutable `vNNNN` folders, active pointers, and an activation log.

    <root>/v0001/metadata.json     what was trained on, parameters, metrics (written before publish)
    <root>/v0001/pipeline/         the fitted PipelineModel (absent when a forecast table answers)
    <root>/v0001/forecasts.parquet the version's forecast table, if any (salesflow.serving.table)
    <root>/ACTIVE                  the active month model's name (replaced atomically)
    <root>/ACTIVE.day              the active day model's name
    <root>/activations.jsonl       every change of a pointer: who, when, why, previous, granularity

There is one active pointer per granularity, so a month model and a day model can both be active;
a version's granularity is its metadata's `granularity` (absent in old registries: month, whose
pointer keeps its old file name so they stay readable).
    <root>/.staging/<random>/      a version being built; renamed to vNNNN when complete

Publishing is a rename of a complete staged folder onto a version name: rename refuses a non-empty
target, so two processes racing for the same number both succeed, with different numbers. A
publisher that compared itself with the active version passes `expected_active`: if the pointer
moved meanwhile, the new version stays a candidate (salesflow.spark.promotion is the gate that
decides). Plain Python only (no Spark), so listing versions is instant.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from salesflow.errors import ModelError, ModelNotFoundError

__all__ = [
    "ANY_ACTIVE",
    "GRANULARITIES",
    "ModelRegistry",
    "ModelVersion",
    "granularity_of",
    "normalise_version",
]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"v(\d{4,})")
_LOOSE_VERSION = re.compile(r"v?(\d{1,9})")
#: Give up publishing after this many lost races (each loss means another version was published).
_MAX_ATTEMPTS = 1000
_METADATA = "metadata.json"
_ACTIVE = "ACTIVE"
#: The granularities a model can have; each has its own active pointer.
GRANULARITIES: tuple[str, ...] = ("month", "day")
_LOG = "activations.jsonl"


class _Unchecked(enum.Enum):
    ANY = "any"


#: `publish(expected_active=ANY_ACTIVE)`: activate whatever the active version is now.
ANY_ACTIVE = _Unchecked.ANY


def normalise_version(version: str | int) -> str:
    """ "v0003", "v3", "3" or 3 -> "v0003"; anything else is not a version (ModelNotFoundError)."""
    match = _LOOSE_VERSION.fullmatch(str(version).strip())
    if not match:
        raise ModelNotFoundError(
            f"{str(version)[:40]!r} is not a model version (expected v0001, v0002, ...)"
        )
    return f"v{int(match.group(1)):04d}"


def granularity_of(metadata: dict[str, Any]) -> str:
    """A version's granularity from its metadata; "month" when it records none (older versions)."""
    found = metadata.get("granularity") or (metadata.get("parameters") or {}).get("granularity")
    return "day" if found == "day" else "month"


def _pointer(granularity: str) -> str:
    """The pointer file of a granularity: ACTIVE (month, as before) or ACTIVE.<granularity>."""
    if granularity not in GRANULARITIES:
        raise ModelError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    return _ACTIVE if granularity == "month" else f"{_ACTIVE}.{granularity}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ModelVersion:
    """One published model: its name, folder, metadata, and whether it is the active one of its
    granularity."""

    version: str
    path: Path
    metadata: dict[str, Any]
    active: bool

    @property
    def granularity(self) -> str:
        """ "month" or "day"."""
        return granularity_of(self.metadata)

    @property
    def pipeline_path(self) -> Path:
        """Where the fitted PipelineModel is saved."""
        return self.path / "pipeline"


class ModelRegistry:
    """Versions under `root` (settings.warehouse_path / "models"); safe for several processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- publishing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to build a version in; removed on exit unless it was published."""
        folder = self.root / ".staging" / secrets.token_hex(8)
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            # After a successful publish the folder has been renamed away and this is a no-op.
            shutil.rmtree(folder, ignore_errors=True)

    def publish(
        self,
        staged: Path,
        metadata: dict[str, Any],
        *,
        activate: bool,
        reason: str,
        actor: str,
        expected_active: str | _Unchecked | None = ANY_ACTIVE,
    ) -> ModelVersion:
        """Make a staged folder the next version (never overwriting one); optionally activate it.

        With `expected_active` (a version name, or None for "no active version"), activation only
        happens if the pointer of the version's granularity still names it; otherwise the version
        is published as a candidate and its metadata says why (`activation_refused`, and
        `promotion` when there is one).
        """
        staged = Path(staged)
        if not staged.is_dir():
            raise ModelError(f"nothing staged at {staged}")
        granularity = granularity_of(metadata)
        metadata = {**metadata, "granularity": granularity}
        with self._locked() if activate else contextlib.nullcontext():
            current = self._active_name(granularity)
            if activate and expected_active is not ANY_ACTIVE and current != expected_active:
                refused = (
                    f"not activated: the active version changed from {expected_active or 'none'} "
                    f"to {current or 'none'} while this one was trained and compared"
                )
                log.warning("%s", refused)
                metadata = {**metadata, "activation_refused": refused}
                if isinstance(metadata.get("promotion"), dict):
                    metadata["promotion"] = {
                        **metadata["promotion"],
                        "promoted": False,
                        "reason": refused,
                    }
                activate = False
            version = self._rename_into_place(staged, metadata, activate)
            if activate:
                self._point_at(version, granularity, reason=reason, actor=actor)
        return self.get(version)

    def _rename_into_place(self, staged: Path, metadata: dict[str, Any], activate: bool) -> str:
        for _ in range(_MAX_ATTEMPTS):
            version = self._next_version()
            meta = {
                **metadata,
                "version": version,
                "created_at": _now(),
                "status": "active" if activate else "candidate",
            }
            tmp = staged / f".{_METADATA}.tmp"
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, staged / _METADATA)
            target = self.root / version
            try:
                os.rename(staged, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                    continue  # another publisher took this number: try the next one
                raise
            log.info("published model %s", version)
            return version
        raise ModelError(f"could not allocate a version after {_MAX_ATTEMPTS} attempts")

    def _numbers(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(
            int(m.group(1))
            for entry in os.scandir(self.root)
            if (m := _VERSION.fullmatch(entry.name)) and entry.is_dir()
        )

    def _next_version(self) -> str:
        numbers = self._numbers()
        return f"v{(numbers[-1] + 1) if numbers else 1:04d}"

    # --- reading -----------------------------------------------------------------------------

    def _active_name(self, granularity: str = "month") -> str | None:
        try:
            name = (self.root / _pointer(granularity)).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def active_name(self, granularity: str = "month") -> str | None:
        """The active version's name of a granularity, from its pointer alone (no metadata read)."""
        return self._active_name(granularity)

    def _active_names(self) -> set[str]:
        return {n for g in GRANULARITIES if (n := self._active_name(g))}

    def _load(self, version: str, active_names: set[str]) -> ModelVersion:
        path = self.root / version
        try:
            metadata = json.loads((path / _METADATA).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelNotFoundError(f"no model version {version}") from None
        metadata["granularity"] = granularity_of(metadata)
        active = version in active_names and self._active_name(metadata["granularity"]) == version
        metadata["status"] = "active" if active else "candidate"
        return ModelVersion(version, path, metadata, active)

    def versions(self, granularity: str | None = None) -> list[ModelVersion]:
        """Every published version (of one granularity, if given), oldest first."""
        active_names = self._active_names()
        found = []
        for number in self._numbers():
            try:
                version = self._load(f"v{number:04d}", active_names)
                if granularity is None or version.granularity == granularity:
                    found.append(version)
            except ModelNotFoundError:
                continue  # not a published version (no metadata)
        return found

    def get(self, version: str | int) -> ModelVersion:
        """One version by name ("v0003"; "3" works too); ModelNotFoundError when there is none."""
        return self._load(normalise_version(version), self._active_names())

    def active(self, granularity: str = "month") -> ModelVersion | None:
        """The active version of a granularity, or None when none has been activated yet."""
        name = self._active_name(granularity)
        if name is None:
            return None
        try:
            return self._load(name, {name})
        except ModelNotFoundError:
            log.warning("the active %s pointer names %s, which does not exist", granularity, name)
            return None

    def require_active(self, granularity: str = "month") -> ModelVersion:
        """The active version; ModelNotFoundError saying how to get one when there is none."""
        found = self.active(granularity)
        if found is None and granularity == "month":
            raise ModelNotFoundError("no active model: train one first (upload a sales file)")
        if found is None:
            raise ModelNotFoundError(
                f"no active {granularity} model: train one first (granularity {granularity} or "
                "both)"
            )
        return found

    def history(self) -> list[dict[str, Any]]:
        """Every activation, oldest first: {at, version, previous, reason, actor, granularity}."""
        try:
            lines = (self.root / _LOG).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    # --- activation --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def activate(self, version: str | int, *, reason: str, actor: str) -> ModelVersion:
        """Point the active model of the version's granularity at it (also a rollback); log it."""
        name = normalise_version(version)
        with self._locked():
            found = self._load(name, set())  # raises ModelNotFoundError for a missing version
            self._point_at(name, found.granularity, reason=reason, actor=actor)
        return self.get(name)

    def _point_at(self, name: str, granularity: str, *, reason: str, actor: str) -> None:
        """Replace a granularity's pointer and append to the log; the caller holds the lock."""
        previous = self._active_name(granularity)
        pointer = _pointer(granularity)
        tmp = self.root / f".{pointer}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(name + "\n", encoding="utf-8")
        os.replace(tmp, self.root / pointer)
        entry = {
            "at": _now(),
            "version": name,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            "granularity": granularity,
        }
        with (self.root / _LOG).open("a", encoding="utf-8") as log_file:
            log_file.write(json.dumps(entry, sort_keys=True) + "\n")
        log.info("activated %s model %s (previous %s): %s", granularity, name, previous, reason)
