"""The dead-letter record: why an upload event was parked, with the original event attached.

Shape (shared contract): `{"schema_version": 1, "reason", "detail", "upload_id", "event",
"failed_at"}`. The detail is for people reading the dead-letter topic, so it is scrubbed of URLs and
absolute paths (no bucket names, no folders, no credentials), whatever produced it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "MAX_DETAIL_CHARS",
    "MAX_EVENT_BYTES",
    "dead_letter",
    "encode_dead_letter",
    "scrub",
]

DEAD_LETTER_SCHEMA_VERSION = 1
#: The original event is kept up to 64 KiB (contract); a real upload event is a few hundred bytes.
MAX_EVENT_BYTES = 64 * 1024
#: A detail is one human sentence; anything longer is cut so a record stays small.
MAX_DETAIL_CHARS = 2000

# scheme://anything-up-to-whitespace, e.g. file:///srv/data/x.csv, s3://bucket/key, http://host:1/
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S*")
# An absolute posix path of two or more segments that does not follow a word character or a slash.
_PATH = re.compile(r"(?<![\w/.:-])/(?:[^\s/'\"]+/)+[^\s/'\",;:)]*")


def scrub(detail: str) -> str:
    """The detail with URLs and absolute paths replaced by placeholders, cut to a sane length."""
    cleaned = _PATH.sub("<path>", _URL.sub("<url>", detail))
    if len(cleaned) > MAX_DETAIL_CHARS:
        cleaned = cleaned[: MAX_DETAIL_CHARS - 3] + "..."
    return cleaned


def dead_letter(
    reason: str,
    detail: str,
    upload_id: str | None,
    event: bytes | None,
    *,
    failed_at: datetime | None = None,
) -> dict[str, Any]:
    """The dead-letter record for an event that can never be handled."""
    when = (failed_at or datetime.now(UTC)).astimezone(UTC)
    original = (event or b"")[:MAX_EVENT_BYTES].decode("utf-8", errors="replace")
    return {
        "schema_version": DEAD_LETTER_SCHEMA_VERSION,
        "reason": reason,
        "detail": scrub(detail),
        "upload_id": upload_id,
        "event": original,
        "failed_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def encode_dead_letter(
    reason: str,
    detail: str,
    upload_id: str | None,
    event: bytes | None,
    *,
    failed_at: datetime | None = None,
) -> bytes:
    """The dead-letter record as the JSON bytes published on the dead-letter topic."""
    record = dead_letter(reason, detail, upload_id, event, failed_at=failed_at)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
