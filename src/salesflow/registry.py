"""Model versions on disk: immutable `vNNNN` folders, an active pointer, and an activation log.

    <root>/v0001/metadata.json     what was trained on, parameters, metrics (written before publish)
    <root>/v0001/pipeline/         the fitted PipelineModel
    <root>/ACTIVE                  the active version's name (replaced atomically)
    <root>/activations.jsonl       every change of the pointer: who, when, why, previous
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

__all__ = ["ANY_ACTIVE", "ModelRegistry", "ModelVersion", "normalise_version"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"v(\d{4,})")
_LOOSE_VERSION = re.compile(r"v?(\d{1,9})")
#: Give up publishing after this many lost races (each loss means another version was published).
_MAX_ATTEMPTS = 1000
_METADATA = "metadata.json"
_ACTIVE = "ACTIVE"
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ModelVersion:
    """One published model: its name, folder, metadata, and whether it is the active one."""

    version: str
    path: Path
    metadata: dict[str, Any]
    active: bool

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
        happens if the pointer still names it; otherwise the version is published as a candidate
        and its metadata says why (`activation_refused`, and `promotion` when there is one).
        """
        staged = Path(staged)
        if not staged.is_dir():
            raise ModelError(f"nothing staged at {staged}")
        with self._locked() if activate else contextlib.nullcontext():
            current = self._active_name()
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
                self._point_at(version, reason=reason, actor=actor)
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

    def _active_name(self) -> str | None:
        try:
            name = (self.root / _ACTIVE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def _load(self, version: str, active_name: str | None) -> ModelVersion:
        path = self.root / version
        try:
            metadata = json.loads((path / _METADATA).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelNotFoundError(f"no model version {version}") from None
        active = version == active_name
        metadata["status"] = "active" if active else "candidate"
        return ModelVersion(version, path, metadata, active)

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first."""
        active_name = self._active_name()
        found = []
        for number in self._numbers():
            try:
                found.append(self._load(f"v{number:04d}", active_name))
            except ModelNotFoundError:
                continue  # not a published version (no metadata)
        return found

    def get(self, version: str | int) -> ModelVersion:
        """One version by name ("v0003"; "3" works too); ModelNotFoundError when there is none."""
        return self._load(normalise_version(version), self._active_name())

    def active(self) -> ModelVersion | None:
        """The active version, or None when no model has been activated yet."""
        name = self._active_name()
        if name is None:
            return None
        try:
            return self._load(name, name)
        except ModelNotFoundError:
            log.warning("the active pointer names %s, which does not exist", name)
            return None

    def require_active(self) -> ModelVersion:
        """The active version; ModelNotFoundError saying how to get one when there is none."""
        found = self.active()
        if found is None:
            raise ModelNotFoundError("no active model: train one first (upload a sales file)")
        return found

    def history(self) -> list[dict[str, Any]]:
        """Every activation, oldest first: {at, version, previous, reason, actor}."""
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
        """Point the active model at `version` (also a rollback) and log who, when and why."""
        name = normalise_version(version)
        with self._locked():
            self._load(name, None)  # raises ModelNotFoundError for a missing version
            self._point_at(name, reason=reason, actor=actor)
        return self.get(name)

    def _point_at(self, name: str, *, reason: str, actor: str) -> None:
        """Replace the pointer and append to the log; the caller holds the lock."""
        previous = self._active_name()
        tmp = self.root / f".{_ACTIVE}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(name + "\n", encoding="utf-8")
        os.replace(tmp, self.root / _ACTIVE)
        entry = {
            "at": _now(),
            "version": name,
            "previous": previous,
            "reason": reason,
            "actor": actor,
        }
        with (self.root / _LOG).open("a", encoding="utf-8") as log_file:
            log_file.write(json.dumps(entry, sort_keys=True) + "\n")
        log.info("activated model %s (previous %s): %s", name, previous, reason)
