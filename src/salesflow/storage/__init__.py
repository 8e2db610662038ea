"""Object storage behind one small interface, addressed by URL: file:///folder or s3://bucket/prefix.

- `base`: the interface (`ObjectStore`, `ObjectWriter`, `ObjectInfo`) and the key rules
- `local`: `FileStore`, a local folder (temp file renamed into place on commit)
- `s3`: `S3Store`, a bucket and prefix (multipart upload completed on commit)
- here: `open_store(url)` / `store_for(settings)`, the one way to get a store
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.storage.base import ObjectInfo, ObjectStore, ObjectWriter
from salesflow.storage.local import FileStore
from salesflow.storage.s3 import S3Store
from salesflow.urls import local_path_of

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
