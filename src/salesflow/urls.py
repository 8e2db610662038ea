"""Storage URLs as local paths: the one rule for file:// URLs and plain paths."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from salesflow.errors import InputError

__all__ = ["local_path_of"]


def local_path_of(url: str) -> Path:
    """A file:// URL (or a plain path) as a local Path."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else url)
    raise InputError(f"{url!r} is not a local file:// location")
