"""Ids as people type them: a unique prefix of an upload id (what the compact tables show) is
accepted wherever a command takes an upload id."""

from __future__ import annotations

import re
from collections.abc import Iterable

from salesflow.cli.app import settings
from salesflow.errors import InputError, NotFoundError

__all__ = ["MIN_PREFIX", "unique_id", "upload_id"]

#: Shorter prefixes would match too much to be a safe way to name something.
MIN_PREFIX = 4
#: A whole id (uploads and jobs: 32 hex characters) is used as typed, without a look-up.
_WHOLE = re.compile(r"[0-9a-f]{32}")
#: How many of the newest uploads a prefix is looked for among (the upload service's list limit).
_LOOKUP = 1000


def upload_id(typed: str) -> str:
    """The upload id `typed` is, or the one upload id among the newest that starts with it."""
    from salesflow.clients.upload import UploadClient

    typed = typed.strip().lower()
    if _WHOLE.fullmatch(typed):
        return typed
    with UploadClient(settings()) as client:
        known = [str(r["upload_id"]) for r in client.list(limit=_LOOKUP)]
    return unique_id(typed, known, "upload")


def unique_id(prefix: str, ids: Iterable[str], kind: str) -> str:
    """The one id of `ids` starting with `prefix`; a clear error when none or several do."""
    if len(prefix) < MIN_PREFIX:
        raise InputError(f"{prefix!r} is too short to name an {kind}: type at least {MIN_PREFIX}")
    found = sorted({i for i in ids if i.startswith(prefix)})
    if not found:
        raise NotFoundError(f"no {kind} id starts with {prefix!r}")
    if len(found) > 1:
        some = ", ".join(f[:12] for f in found[:4])
        raise InputError(
            f"{prefix!r} starts {len(found)} {kind} ids ({some}, ...): type more of it"
        )
    return found[0]
