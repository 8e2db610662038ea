"""The storage interface: `ObjectStore`, its streaming `ObjectWriter` and the key rules both stores share.

Writes stream through an `ObjectWriter` that hashes as it goes and publishes nothing until
`commit()`. Keys are relative posix paths checked by the same rules on both stores, so a key valid on
one is valid on the other.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from salesflow.errors import (
    InvalidKeyError,
    StorageError,
)

__all__ = [
    "CHUNK_SIZE",
    "MAX_KEY_BYTES",
    "TEMP_NAME",
    "ObjectInfo",
    "ObjectStore",
    "ObjectWriter",
    "check_key",
    "read_up_to",
]

log = logging.getLogger(__name__)

#: Read size when hashing or copying: big enough to amortise calls, small enough to stay flat.
CHUNK_SIZE = 1024 * 1024
#: S3's limit on key length, in UTF-8 bytes; applied to both stores so keys are portable.
MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The name of a store's own temp file (".<name>.tmp-<16 hex>"): never a valid key segment.
TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{16}")


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key, size, sha256 (None when the store did not record one) and URL."""

    key: str
    size: int
    sha256: str | None
    url: str


def check_key(key: str, *, prefix: bool = False) -> str:
    """Return `key` if it is a safe relative posix key, else raise InvalidKeyError saying why."""
    shown = repr(key[:120])
    if not key and not prefix:
        raise InvalidKeyError(f"object key {shown} is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key {shown}... is longer than {MAX_KEY_BYTES} bytes")
    if "\\" in key or _CONTROL.search(key):
        raise InvalidKeyError(f"object key {shown} contains a backslash or a control character")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {shown} is absolute; keys are relative to the store")
    parts = key.split("/")
    if prefix and not parts[-1]:  # a prefix may end in "/" (or be empty)
        parts = parts[:-1]
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidKeyError(f"object key {shown} has an empty, '.' or '..' segment")
        if TEMP_NAME.fullmatch(part):
            raise InvalidKeyError(f"object key {shown} looks like a store temp file")
    return key


class ObjectWriter(ABC):
    """A streaming put: hashes while writing; nothing is visible until commit().

    Used as a context manager it aborts on an exception unless already committed.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._hash = hashlib.sha256()
        self._size = 0
        self._state = "open"  # -> "committed" | "aborted"

    def write(self, data: bytes) -> None:
        """Append bytes to the object."""
        self._require_open()
        if not data:
            return
        self._hash.update(data)
        self._size += len(data)
        self._write(data)

    def commit(self) -> ObjectInfo:
        """Publish the object atomically and return what was stored."""
        self._require_open()
        info = self._commit(self._size, self._hash.hexdigest())
        self._state = "committed"
        return info

    def abort(self) -> None:
        """Drop everything written so far; leaves no object and no temp data. Idempotent."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._abort()

    def _require_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"the writer of {self.key!r} is already {self._state}")

    def _fail(self, exc: BaseException) -> None:
        """Abort after a failure without letting a second error hide the first."""
        try:
            self.abort()
        except Exception:
            log.warning("could not clean up the failed write of %r", self.key, exc_info=True)

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.abort()  # left without commit(): nothing is published (no-op after commit)
        else:
            self._fail(exc)

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _commit(self, size: int, sha256: str) -> ObjectInfo: ...

    @abstractmethod
    def _abort(self) -> None: ...


class ObjectStore(ABC):
    """A flat namespace of keys -> bytes. Subclasses provide the primitives; the rest is shared."""

    base_url: str

    @abstractmethod
    def writer(self, key: str) -> ObjectWriter:
        """A streaming writer for `key` (replaces any existing object on commit)."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the object; ObjectNotFoundError if it does not exist."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size (and the sha256 recorded at put, if the store kept one) without reading the bytes."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (as on S3)."""

    def sweep_unfinished(self, prefix: str) -> tuple[str, ...]:
        """Remove what unfinished writes under `prefix` left behind (temp files, incomplete
        multipart uploads); what was removed. Only for a writer that knows no write of its own
        is in flight under `prefix` (the upload service as it starts)."""
        return ()

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The URL of `key` in this store."""

    @abstractmethod
    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """The object as a local file for tools that need a path: the file itself, or a copy."""

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Store an object from an iterable of byte chunks."""
        with self.writer(key) as out:
            for chunk in chunks:
                out.write(chunk)
            return out.commit()

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store a local file."""
        with path.open("rb") as src:
            return self.put(key, iter(lambda: src.read(CHUNK_SIZE), b""))

    def read_head(self, key: str, n: int) -> bytes:
        """The first `n` bytes (fewer if the object is shorter)."""
        with self.open(key) as src:
            return read_up_to(src, n)

    def checksum(self, key: str) -> ObjectInfo:
        """Re-read the object: its real size and sha256."""
        digest, size = hashlib.sha256(), 0
        with self.open(key) as src:
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        return ObjectInfo(key, size, digest.hexdigest(), self.url_for(key))


def read_up_to(src: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining > 0 and (chunk := src.read(remaining)):
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)
