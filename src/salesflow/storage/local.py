"""The object store in a local folder: a fsynced temp file renamed into place on commit."""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from salesflow import libc
from salesflow.errors import (
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
)
from salesflow.storage.base import (
    TEMP_NAME,
    ObjectInfo,
    ObjectStore,
    ObjectWriter,
    check_key,
)

__all__ = ["FileStore"]

log = logging.getLogger(__name__)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}

#: Bytes written between two requests to start writing them to disk (`libc.start_writeback`).
#: Without them the kernel holds a whole 1 GB upload as dirty pages and commit's fsync writes it
#: all while the client waits (0.45 s per GB on this machine's disk); started every 8 MiB the
#: writes keep pace and fsync has nearly nothing left (a 1 GB hash-and-write loop: 0.87-0.92 s
#: against 1.35-2.8 s). 1 MiB steps were slower (2.1 s: too many small disk requests); 4-32 MiB
#: all did as well as 8.
WRITEBACK_STEP = 8 * 1024 * 1024


def _os_error(exc: OSError, key: str, action: str) -> StorageError:
    if exc.errno in _FULL_ERRNOS:
        return StorageFullError(
            f"no space left while {action} {key!r}: {exc.strerror}; free space on the object "
            "store's disk and try again"
        )
    return StorageError(f"{action} {key!r} failed: {exc.strerror or type(exc).__name__}")


class _FileWriter(ObjectWriter):
    """Writes `.<name>.tmp-<random>` beside the target; fsync + os.replace on commit."""

    def __init__(self, store: FileStore, key: str, path: Path) -> None:
        super().__init__(key)
        self._store = store
        self._path = path
        self._tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise _os_error(exc, key, "creating") from exc
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._written = 0
        self._started = 0  # bytes handed to libc.start_writeback so far

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._written += len(data)
            if self._written - self._started >= WRITEBACK_STEP:
                self._file.flush()  # small writes may still sit in the file object's buffer
                libc.start_writeback(
                    self._file.fileno(), self._started, self._written - self._started
                )
                self._started = self._written
        except OSError as exc:
            self._fail(exc)
            raise _os_error(exc, self.key, "writing") from exc

    def _commit(self, size: int, sha256: str) -> ObjectInfo:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._path)
            _fsync_dir(self._path.parent)  # make the rename itself durable
        except OSError as exc:
            self._fail(exc)
            raise _os_error(exc, self.key, "committing") from exc
        return ObjectInfo(self.key, size, sha256, self._store.url_for(self.key))

    def _abort(self) -> None:
        with suppress(OSError):  # a full disk can fail the final flush; the temp file goes anyway
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(ObjectStore):
    """Objects as files under a local folder; commits are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.base_url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def writer(self, key: str) -> ObjectWriter:
        return _FileWriter(self, key, self._path(key))

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.base_url}") from None
        except OSError as exc:
            raise _os_error(exc, key, "opening") from exc

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.base_url}")
        return ObjectInfo(key, path.stat().st_size, None, self.url_for(key))

    def list(self, prefix: str = "") -> list[str]:
        check_key(prefix, prefix=True)
        start = self.root.joinpath(*prefix.split("/")[:-1])
        keys: list[str] = []
        for folder, _dirs, files in os.walk(start):
            rel = PurePosixPath(Path(folder).relative_to(self.root).as_posix())
            for name in files:
                key = str(rel / name) if str(rel) != "." else name
                if not TEMP_NAME.fullmatch(name) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, key, "deleting") from exc

    def sweep_unfinished(self, prefix: str) -> tuple[str, ...]:
        check_key(prefix, prefix=True)
        removed = []
        for folder, _dirs, files in os.walk(self.root.joinpath(*prefix.split("/")[:-1])):
            for name in files:
                if TEMP_NAME.fullmatch(name):
                    path = Path(folder, name)
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
        return tuple(removed)

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.base_url}")
        yield path
