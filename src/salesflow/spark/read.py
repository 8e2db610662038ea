"""Reading sales CSVs into Spark: locate the file, check its header, read every column as text.

The header check (`schema.check_header` on the first bytes) runs before any Spark work, so a wrong
file fails in milliseconds with a message naming the missing columns. Spark then reads with an
explicit all-string schema in the file's own column order: types are parsed later by
`transforms.validate` with `try_*` functions, so a bad value becomes a reject, never an exception.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from salesflow.config import Settings
from salesflow.errors import InputError, ObjectNotFoundError
from salesflow.schema import HEADER_PROBE_BYTES, HeaderInfo, check_header
from salesflow.storage import local_path_of, open_store

__all__ = ["SalesSource", "file_sha256", "open_sales", "read_sales", "spark_columns"]

log = logging.getLogger(__name__)

#: Read size when hashing a local file.
_CHUNK = 1024 * 1024


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
    names: list[str] = []
    for i, name in enumerate(header.columns):
        names.append(name if name and name not in names else f"_c{i}")
    return names


def read_sales(
    spark: SparkSession, path: str, header: HeaderInfo, *, multiline: bool = True
) -> DataFrame:
    """Read a sales CSV with every column as a string, named as in `header` (file order).

    Quotes follow RFC 4180 (a doubled quote inside a quoted field); with `multiline` a quoted field
    may hold a line break (Spark then reads each file in one task instead of splitting it).
    """
    schema = StructType([StructField(n, StringType(), True) for n in spark_columns(header)])
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


@contextmanager
def open_sales(
    url: str, settings: Settings, *, require_quantity: bool = True
) -> Iterator[SalesSource]:
    """Check a sales file's header and give Spark a path to it for the duration of the block.

    `url` is file:///..., a plain path, or s3://bucket/key. An s3 object is read as s3a:// when
    `settings.spark_s3a` is on, otherwise it is staged to a local temp file that the block owns.
    """
    scheme = urlparse(url).scheme
    if scheme in ("", "file"):
        path = local_path_of(url).resolve()
        header = check_header(_local_head(path), require_quantity=require_quantity)
        yield SalesSource(url, str(path), header, path)
        return
    if scheme != "s3":
        raise InputError(f"unsupported sales file URL {url!r}: use file:///path, a path, or s3://")
    base, key = _split_s3(url)
    store = open_store(base, settings)
    header = check_header(
        store.read_head(key, HEADER_PROBE_BYTES), require_quantity=require_quantity
    )
    if settings.spark_s3a:
        yield SalesSource(url, "s3a://" + url[len("s3://") :], header, None)
        return
    log.info("staging %s to a local file (spark_s3a is off)", url)
    with store.local_path(key) as staged:
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
