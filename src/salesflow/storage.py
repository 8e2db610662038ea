"""Object storage behind one small interface, addressed by URL: file:///folder or s3://bucket/prefix.

INTERFACE CONTRACT (implementation pending — see the helper brief):

    @dataclass(frozen=True)
    class ObjectInfo:
        key: str; size: int; sha256: str | None; url: str

    class ObjectWriter(Protocol):          # streaming put; nothing is visible until commit()
        def write(self, data: bytes) -> None
        def commit(self) -> ObjectInfo     # atomic: rename (file) / complete multipart (s3)
        def abort(self) -> None            # leaves no object and no temp file behind
        # also a context manager: abort() on exception, unless committed

    class ObjectStore(Protocol):
        base_url: str
        def writer(self, key: str) -> ObjectWriter
        def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo
        def put_file(self, key: str, path: Path) -> ObjectInfo
        def open(self, key: str) -> BinaryIO          # streaming read; ObjectNotFoundError
        def read_head(self, key: str, n: int) -> bytes
        def head(self, key: str) -> ObjectInfo         # size (+ sha256 recorded at put, if any)
        def checksum(self, key: str) -> ObjectInfo     # re-reads the bytes: real size and sha256
        def list(self, prefix: str = "") -> list[str]
        def delete(self, key: str) -> None
        def url_for(self, key: str) -> str
        def local_path(self, key: str) -> ContextManager[Path]  # file: the file; s3: a staged copy

    def open_store(url: str, settings: Settings) -> ObjectStore
    def local_path_of(url: str) -> Path    # file:// URL or plain path -> Path; InputError otherwise
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from salesflow.errors import InputError


def local_path_of(url: str) -> Path:
    """A file:// URL (or a plain path) as a local Path."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else url)
    raise InputError(f"{url!r} is not a local file:// location")
