"""Object storage behind one small interface, addressed by URL: file:///folder or s3://bucket/prefix.

Writes stream through an `ObjectWriter` that hashes as it goes and publishes nothing until
`commit()`: the file store renames a fsynced temp file into place, the S3 store completes a
multipart upload (or does one put_object for objects smaller than one part). Keys are relative
posix paths checked by the same rules on both stores, so a key valid on one is valid on the other.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import unquote, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from salesflow.config import Settings
from salesflow.errors import (
    InputError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "FileStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectWriter",
    "S3Store",
    "local_path_of",
    "open_store",
    "store_for",
]

log = logging.getLogger(__name__)

#: Read size when hashing or copying: big enough to amortise calls, small enough to stay flat.
CHUNK_SIZE = 1024 * 1024
#: S3's limit on key length, in UTF-8 bytes; applied to both stores so keys are portable.
MAX_KEY_BYTES = 1024
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key, size, sha256 (None when the store did not record one) and URL."""

    key: str
    size: int
    sha256: str | None
    url: str


def _check_key(key: str, *, prefix: bool = False) -> str:
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
        if _TEMP_NAME.fullmatch(part):
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
            return _read_up_to(src, n)

    def checksum(self, key: str) -> ObjectInfo:
        """Re-read the object: its real size and sha256."""
        digest, size = hashlib.sha256(), 0
        with self.open(key) as src:
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        return ObjectInfo(key, size, digest.hexdigest(), self.url_for(key))


def _read_up_to(src: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining > 0 and (chunk := src.read(remaining)):
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


# --- local folder ------------------------------------------------------------------------------


def _os_error(exc: OSError, key: str, action: str) -> StorageError:
    if exc.errno in _FULL_ERRNOS:
        return StorageFullError(f"no space left while {action} {key!r}: {exc.strerror}")
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

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
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
        return self.root.joinpath(*_check_key(key).split("/"))

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
        _check_key(prefix, prefix=True)
        start = self.root.joinpath(*prefix.split("/")[:-1])
        keys: list[str] = []
        for folder, _dirs, files in os.walk(start):
            rel = PurePosixPath(Path(folder).relative_to(self.root).as_posix())
            for name in files:
                key = str(rel / name) if str(rel) != "." else name
                if not _TEMP_NAME.fullmatch(name) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, key, "deleting") from exc

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.base_url}")
        yield path


# --- S3 ----------------------------------------------------------------------------------------


def _s3_error(exc: Exception, key: str, action: str) -> StorageError:
    """Map a botocore error to ours: the message names the key and S3's error code or the error
    type only, never server text, credentials, signatures or the endpoint URL."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        if code in _MISSING_CODES:
            return ObjectNotFoundError(f"no object {key!r}")
        return StorageError(f"S3 {action} of {key!r} failed: {code}")
    return StorageError(f"S3 {action} of {key!r} failed: {type(exc).__name__}")


_S3_ERRORS = (ClientError, BotoCoreError)


class _PartBuffers:
    """Part-sized buffers reused by every S3 writer of the process.

    A new 8 MiB `bytes` per part makes glibc raise its mmap threshold and then keep the freed parts
    in its heaps: the upload service's RSS crept ~50 MB above its working set. Buffers taken here
    are filled in place and handed to botocore as they are (it accepts a bytearray body).
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            for i, buffer in enumerate(self._free):
                if len(buffer) == size:
                    return self._free.pop(i)
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)


#: Free part buffers kept for the next upload: one writer's worth at the default concurrency (4).
_PARTS = _PartBuffers(keep=4)


class _S3Writer(ObjectWriter):
    """Fills one part in place; small objects become one put_object, larger ones a parallel
    multipart.

    At most `s3_max_concurrency` parts are in flight, and a new part is only filled while a slot is
    free, so memory stays near part_size * concurrency, in reused buffers (`_PartBuffers`). Multipart metadata must be
    set when the upload is created, before the hash is known, so multipart objects carry no sha256
    metadata (head() returns None).
    """

    def __init__(self, store: S3Store, key: str) -> None:
        super().__init__(key)
        self._store = store
        self._s3_key = store._s3_key(key)
        self._part_size = store.settings.s3_part_size
        self._concurrency = store.settings.s3_max_concurrency
        self._part: bytearray | None = None  # the part being filled (a pooled buffer)
        self._filled = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[tuple[int, str]]] = set()
        self._etags: dict[int, str] = {}
        self._next_part = 1

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                if self._part is None:
                    self._part = _PARTS.take(self._part_size)
                n = min(len(view), self._part_size - self._filled)
                self._part[self._filled : self._filled + n] = view[:n]
                self._filled += n
                view = view[n:]
                if self._filled == self._part_size:
                    part, self._part, self._filled = self._part, None, 0
                    self._submit(part)
        except _S3_ERRORS as exc:
            self._fail(exc)
            raise _s3_error(exc, self.key, "upload") from exc

    def _rest(self) -> bytes:
        """The bytes of the unfinished part (a copy); its buffer goes back to the pool."""
        if self._part is None:
            return b""
        rest = bytes(memoryview(self._part)[: self._filled])
        _PARTS.give(self._part)
        self._part, self._filled = None, 0
        return rest

    def _submit(self, part: bytearray | bytes) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:
            created = client.create_multipart_upload(Bucket=bucket, Key=self._s3_key)
            self._upload_id = created["UploadId"]
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-part")
        assert self._pool is not None
        upload_id, number = self._upload_id, self._next_part
        self._next_part += 1

        def upload() -> tuple[int, str]:
            try:
                response = client.upload_part(
                    Bucket=bucket,
                    Key=self._s3_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=cast(bytes, part),  # botocore takes a bytearray; the stubs say bytes
                )
            finally:
                if isinstance(part, bytearray):
                    _PARTS.give(part)
            return number, response["ETag"]

        self._pending.add(self._pool.submit(upload))
        # Wait for a free slot now, before the next part's buffer is taken and filled: parts in
        # memory never exceed the parts in flight (the caller's stream waits meanwhile).
        while len(self._pending) >= self._concurrency:
            self._reap(FIRST_COMPLETED)

    def _reap(self, return_when: str) -> None:
        """Wait for in-flight parts; re-raises the first failed part's error."""
        done, self._pending = wait(self._pending, return_when=return_when)
        for future in done:
            number, etag = future.result()
            self._etags[number] = etag

    def _commit(self, size: int, sha256: str) -> ObjectInfo:
        client, bucket = self._store.client, self._store.bucket
        try:
            if self._upload_id is None:
                client.put_object(
                    Bucket=bucket,
                    Key=self._s3_key,
                    Body=self._rest(),
                    Metadata={"sha256": sha256},
                )
            else:
                if rest := self._rest():
                    self._submit(rest)
                self._reap("ALL_COMPLETED")
                parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._s3_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": cast(Any, parts)},
                )
                self._shutdown()
        except _S3_ERRORS as exc:
            self._fail(exc)
            raise _s3_error(exc, self.key, "upload") from exc
        return ObjectInfo(self.key, size, sha256, self._store.url_for(self.key))

    def _abort(self) -> None:
        if self._part is not None:
            _PARTS.give(self._part)
            self._part, self._filled = None, 0
        for future in self._pending:
            future.cancel()
        wait(self._pending)  # a part still uploading would outlive an earlier abort
        self._pending.clear()
        self._shutdown()
        if self._upload_id is not None:
            try:
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._s3_key, UploadId=self._upload_id
                )
            except _S3_ERRORS as exc:
                raise _s3_error(exc, self.key, "abort") from exc

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class S3Store(ObjectStore):
    """Objects under s3://bucket/prefix; credentials come from the standard AWS chain."""

    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        self.bucket = bucket
        self.prefix = _check_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.settings = settings
        self.base_url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            # every part thread needs its own pooled connection; botocore's default pool is 10
            max_pool_connections=max(10, settings.s3_max_concurrency + 2),
            retries={"mode": "standard"},
        )
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            config=config,
        )

    def _s3_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self, key)

    def open(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._s3_key(key))["Body"]
        except _S3_ERRORS as exc:
            raise _s3_error(exc, key, "read") from exc
        return cast(BinaryIO, body)  # botocore's StreamingBody is an io.IOBase with read()

    def read_head(self, key: str, n: int) -> bytes:
        if n <= 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._s3_key(key), Range=f"bytes=0-{n - 1}"
            )
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # an empty object has no byte 0
            raise _s3_error(exc, key, "read") from exc
        except BotoCoreError as exc:
            raise _s3_error(exc, key, "read") from exc

    def head(self, key: str) -> ObjectInfo:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
        except _S3_ERRORS as exc:
            raise _s3_error(exc, key, "head") from exc
        sha256 = response.get("Metadata", {}).get("sha256")
        return ObjectInfo(key, response["ContentLength"], sha256, self.url_for(key))

    def list(self, prefix: str = "") -> list[str]:
        _check_key(prefix, prefix=True)
        root = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            ):
                keys.extend(item["Key"][len(root) :] for item in page.get("Contents", []))
        except _S3_ERRORS as exc:
            raise _s3_error(exc, prefix, "list") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))
        except _S3_ERRORS as exc:
            raise _s3_error(exc, key, "delete") from exc

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._s3_key(key)}"

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        staging = self.settings.data_dir / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, suffix=PurePosixPath(key).suffix)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, self.open(key) as src:
                shutil.copyfileobj(src, out, CHUNK_SIZE)
            yield path
        finally:
            path.unlink(missing_ok=True)


# --- URLs --------------------------------------------------------------------------------------


def open_store(url: str, settings: Settings) -> ObjectStore:
    """The store a URL names: file:///abs/folder (or a plain path) or s3://bucket[/prefix]."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file URL {url!r} names a remote host; use file:///absolute/folder")
        return FileStore(local_path_of(url).resolve())
    if parsed.scheme == "s3":
        if "@" in parsed.netloc:  # never echo: the part before "@" may be a secret
            raise InputError("an s3:// URL must not hold credentials; use the AWS credential chain")
        if not parsed.netloc:
            raise InputError(f"s3 URL {url!r} has no bucket; expected s3://bucket[/prefix]")
        return S3Store(parsed.netloc, unquote(parsed.path), settings)
    raise InputError(
        f"unsupported storage URL scheme {parsed.scheme!r}: "
        "use file:///absolute/folder or s3://bucket[/prefix]"
    )


def store_for(settings: Settings) -> ObjectStore:
    """The store configured by `settings.storage_url`."""
    return open_store(settings.storage_url, settings)


def local_path_of(url: str) -> Path:
    """A file:// URL (or a plain path) as a local Path."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else url)
    raise InputError(f"{url!r} is not a local file:// location")
