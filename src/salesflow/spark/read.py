"""Reading sales CSVs into Spark: locate the file, check its header, read every column as text.

The header check (`schema.check_header` on the first bytes) runs before any Spark work, so a wrong
file fails in milliseconds with a message naming the missing columns. Spark then reads with an
explicit all-string schema in the file's own column order: types are parsed later by
`transforms.validate` with `try_*` functions, so a bad value becomes a reject, never an exception.

Spark's `multiLine` mode (a quoted field may hold a line break) reads each file in ONE task, on one
core. Most files have no such field, so a local file is first scanned for one (`needs_multiline`,
~1 GB/s from the page cache): without one, Spark splits the file across every core and the rows are
the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from salesflow.config import Settings
from salesflow.errors import InputError, IntegrityError, ObjectNotFoundError
from salesflow.sales.contract import HEADER_PROBE_BYTES, HeaderInfo, check_header, column_names
from salesflow.storage import local_path_of, open_store

__all__ = [
    "STAGING_DIR",
    "SalesSource",
    "file_sha256",
    "needs_multiline",
    "open_sales",
    "read_sales",
    "spark_columns",
]

log = logging.getLogger(__name__)

#: Read size when hashing a local file.
_CHUNK = 1024 * 1024
#: Read size when scanning for quoted line breaks: big enough that the quote-free fast path is
#: memchr-bound, small enough that a chunk with quotes costs a few MB of numpy index arrays.
_SCAN_CHUNK = 4 * 1024 * 1024
#: Scan verdicts kept, keyed by (path, size, mtime): a file is read by several jobs and passes.
_SCAN_CACHE_SIZE = 64
_QUOTE, _LF, _CR = ord('"'), ord("\n"), ord("\r")
_scanned: dict[tuple[str, int, int], bool] = {}
_scanned_lock = threading.Lock()  # the job server reads files from several threads


@dataclass(frozen=True)
class SalesSource:
    """A sales file ready for Spark: the path Spark reads and what its header check found.

    `local_path` is the file on this machine (the file itself or a staged copy); None when Spark
    reads the object straight from s3a://.
    """

    url: str
    spark_path: str
    header: HeaderInfo
    local_path: Path | None


def spark_columns(header: HeaderInfo) -> list[str]:
    """Column names for Spark, in file order; blank or repeated extra columns get `_c<i>` names."""
    return column_names(header)


def _scan(handle: BinaryIO, chunk_size: int) -> bool:
    """True when the bytes hold a line break inside quotes, a bare CR, or an unclosed quote."""
    inside = False  # within a quoted field at the start of the chunk
    cr_pending = False  # the previous chunk ended with CR (a CRLF may straddle two chunks)
    while chunk := handle.read(chunk_size):
        if cr_pending and not chunk.startswith(b"\n"):
            return True
        crs = chunk.count(b"\r")
        cr_pending = chunk.endswith(b"\r")
        if crs and crs - chunk.count(b"\r\n") - cr_pending:
            return True  # a bare CR: line splitting then differs between Spark's two readers
        if b'"' not in chunk:
            if inside and (b"\n" in chunk or crs):
                return True
            continue
        data = np.frombuffer(chunk, dtype=np.uint8)
        quotes = np.flatnonzero(data == _QUOTE)
        breaks = np.flatnonzero((data == _LF) | (data == _CR))
        # RFC 4180 doubles a quote inside a quoted field, so the count of quote characters
        # before a byte is odd exactly when that byte is inside quotes.
        before = np.searchsorted(quotes, breaks) + int(inside)
        if np.any(before & 1):
            return True
        inside = bool((len(quotes) + int(inside)) & 1)
    return inside or cr_pending


def needs_multiline(path: Path, *, chunk_size: int = _SCAN_CHUNK) -> bool:
    """Whether Spark needs `multiLine` to read this local CSV right (verdicts cached per version).

    True when a quoted field holds a line break, when a bare CR ends a line, or when a quote is
    never closed; then only the one-task multi-line reader splits records as RFC 4180 says.
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _scanned_lock:
        known = _scanned.get(key)
    if known is not None:
        return known
    with path.open("rb") as handle:
        verdict = _scan(handle, chunk_size)
    with _scanned_lock:
        if len(_scanned) >= _SCAN_CACHE_SIZE:
            _scanned.pop(next(iter(_scanned)))
        _scanned[key] = verdict
    return verdict


def _multiline_for(path: str, multiline: bool) -> bool:
    """`multiline`, turned off for a local file without quoted line breaks (same rows, split)."""
    if not multiline or not os.path.isfile(path):  # s3a:// or a folder: cannot scan cheaply
        return multiline
    needed = needs_multiline(Path(path))
    if not needed:
        log.debug("%s has no quoted line breaks: reading it split, without multiLine", path)
    return needed


def read_sales(
    spark: SparkSession, path: str, header: HeaderInfo, *, multiline: bool = True
) -> DataFrame:
    """Read a sales CSV with every column as a string, named as in `header` (file order).

    Quotes follow RFC 4180 (a doubled quote inside a quoted field); with `multiline` a quoted field
    may hold a line break. Spark's multi-line reader takes a whole file in one task, so it is used
    only when a local file needs it (`needs_multiline`) or cannot be scanned (s3a://).
    """
    schema = StructType([StructField(n, StringType(), True) for n in spark_columns(header)])
    multiline = _multiline_for(path, multiline)
    return spark.read.csv(
        path,
        schema=schema,
        header=True,
        sep=header.delimiter,
        encoding="UTF-8",
        quote='"',
        escape='"',
        multiLine=multiline,
        # Our names replace the file's header line (which may carry a BOM or odd spacing).
        enforceSchema=True,
        mode="PERMISSIVE",
    )


def _split_s3(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    key = unquote(parsed.path).lstrip("/")
    if not parsed.netloc or not key:
        raise InputError(f"s3 URL {url!r} must name an object: s3://bucket/key")
    return f"s3://{parsed.netloc}", key


def _local_head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(HEADER_PROBE_BYTES)
    except FileNotFoundError:
        raise ObjectNotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a CSV file") from None


#: Where a training job keeps its verified private copy of an upload (under the data folder);
#: the job server empties it when it starts.
STAGING_DIR = "staging"


def _check_digest(url: str, found: str, expected: str) -> None:
    if found != expected:
        raise IntegrityError(
            f"the stored file {url.rsplit('/', 1)[-1]} changed after it was verified: its sha256 "
            f"is {found}, the upload's is {expected}; it was not trained on"
        )


@contextmanager
def _verified_copy(path: Path, url: str, sha256: str, settings: Settings) -> Iterator[Path]:
    """A private copy of `path`, hashed as it is copied (one read); IntegrityError unless its
    sha256 is `sha256`. Spark reads the copy, so a later change to the stored file is never seen."""
    folder = settings.data_dir / STAGING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{secrets.token_hex(16)}.csv"
    digest = hashlib.sha256()
    try:
        with path.open("rb") as src, target.open("wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        _check_digest(url, digest.hexdigest(), sha256)
        yield target
    except FileNotFoundError:
        raise ObjectNotFoundError(f"no such file: {url.rsplit('/', 1)[-1]}") from None
    finally:
        target.unlink(missing_ok=True)


@contextmanager
def open_sales(
    url: str, settings: Settings, *, require_quantity: bool = True, sha256: str | None = None
) -> Iterator[SalesSource]:
    """Check a sales file's header and give Spark a path to it for the duration of the block.

    `url` is file:///..., a plain path, or s3://bucket/key. An s3 object is read as s3a:// when
    `settings.spark_s3a` is on, otherwise it is staged to a local temp file that the block owns.
    With `sha256`, the bytes Spark reads are verified first (IntegrityError, checksum_mismatch): a
    local file is copied while it is hashed and Spark reads the copy; a staged s3 object is hashed
    once staged; with s3a the store re-reads the object first (Spark then reads it again).
    """
    scheme = urlparse(url).scheme
    if scheme in ("", "file"):
        path = local_path_of(url).resolve()
        header = check_header(_local_head(path), require_quantity=require_quantity)
        if sha256 is None:
            yield SalesSource(url, str(path), header, path)
            return
        with _verified_copy(path, url, sha256, settings) as copy:
            yield SalesSource(url, str(copy), header, copy)
        return
    if scheme != "s3":
        raise InputError(f"unsupported sales file URL {url!r}: use file:///path, a path, or s3://")
    base, key = _split_s3(url)
    store = open_store(base, settings)
    header = check_header(
        store.read_head(key, HEADER_PROBE_BYTES), require_quantity=require_quantity
    )
    if settings.spark_s3a:
        if sha256 is not None:
            _check_digest(url, str(store.checksum(key).sha256), sha256)
        yield SalesSource(url, "s3a://" + url[len("s3://") :], header, None)
        return
    log.info("staging %s to a local file (spark_s3a is off)", url)
    with store.local_path(key) as staged:
        if sha256 is not None:
            _check_digest(url, file_sha256(str(staged), settings), sha256)
        yield SalesSource(url, str(staged), header, staged)


def file_sha256(url: str, settings: Settings) -> str:
    """The sha256 of a file's bytes: a local path or file:// URL is hashed here, s3 by the store."""
    if urlparse(url).scheme == "s3":
        base, key = _split_s3(url)
        digest = open_store(base, settings).checksum(key).sha256
        assert digest is not None  # checksum() always re-reads the bytes
        return digest
    h = hashlib.sha256()
    path = local_path_of(url)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise ObjectNotFoundError(f"no such file: {path}") from None
    return h.hexdigest()
