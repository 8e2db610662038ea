"""The sales CSV contract, upload ids and keys, and the upload event that travels through Kafka.

Everything here is plain Python (no Spark, no Kafka) so the services and the Spark jobs share one
definition of what a valid file, key and event are.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from salesflow.errors import HeaderError, InvalidEventError, InvalidKeyError
from salesflow.sales.ledger import MODES

__all__ = [
    "DELIMITERS",
    "EVENT_SCHEMA_VERSION",
    "HEADER_PROBE_BYTES",
    "PREDICTION_COLUMNS",
    "QUANTITY_REASONS",
    "REJECT_REASONS",
    "REQUIRED_COLUMNS",
    "HeaderInfo",
    "UploadEvent",
    "check_header",
    "column_names",
    "new_upload_id",
    "upload_id_from_key",
    "upload_key",
]

#: What a file to predict needs; names, price, quantity and any other column are optional.
PREDICTION_COLUMNS: tuple[str, ...] = ("product_id", "store_id", "date")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "product_id",
    "product_name",
    "product_price",
    "store_id",
    "store_name",
    "quantity",
    "date",
)
DELIMITERS: tuple[str, ...] = (",", "\t", ";")
#: Why a row is rejected, in the order the checks apply (a row gets the first that fits). The Spark
#: job (spark/transforms.py) and the upload preview (preview.py) both judge rows by these.
REJECT_REASONS: tuple[str, ...] = (
    "missing_store_id",
    "missing_product_id",
    "bad_date",
    "missing_quantity",
    "bad_quantity",
    "negative_quantity",
)
#: Reasons that only concern the quantity: a prediction input may still use such a row.
QUANTITY_REASONS: tuple[str, ...] = ("missing_quantity", "bad_quantity", "negative_quantity")
#: How much of a file the header check reads: a header longer than this is refused.
HEADER_PROBE_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"

EVENT_SCHEMA_VERSION = 1
UPLOAD_PREFIX = "uploads/"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_UPLOAD_KEY = re.compile(r"uploads/([0-9a-f]{32})\.csv")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HeaderInfo:
    """What the header check learned: the delimiter, the columns in file order, any extras."""

    delimiter: str
    columns: tuple[str, ...]
    extra_columns: tuple[str, ...]
    has_bom: bool


def _normalise(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def check_header(head: bytes, *, require_quantity: bool = True) -> HeaderInfo:
    """Validate a file's header from its first bytes; name exactly what is wrong.

    Accepts comma-, tab- or semicolon-separated headers, UTF-8 with or without BOM, LF or CRLF.
    `require_quantity=False` checks prediction input: only PREDICTION_COLUMNS are required.
    """
    required = REQUIRED_COLUMNS if require_quantity else PREDICTION_COLUMNS
    has_bom = head.startswith(_BOM)
    if has_bom:
        head = head[len(_BOM) :]
    if not head.strip():
        raise HeaderError("the file is empty: expected a header line with " + _expected(required))
    end = head.find(b"\n")
    if end < 0:
        if len(head) >= HEADER_PROBE_BYTES:
            raise HeaderError(f"no end of header line in the first {HEADER_PROBE_BYTES} bytes")
        end = len(head)
    line_bytes = head[:end].rstrip(b"\r")
    if b"\x00" in line_bytes:
        raise HeaderError("the file looks binary (NUL byte in the header), not a CSV text file")
    try:
        line = line_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(
            f"the header is not UTF-8: invalid byte at offset {exc.start + (3 if has_bom else 0)}"
        ) from None
    best: tuple[int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        names = [_normalise(n) for n in line.split(delimiter)]
        found = sum(1 for c in required if c in names)
        if best is None or found > best[0]:
            best = (found, delimiter, names)
    assert best is not None
    found, delimiter, names = best
    missing = [c for c in required if c not in names]
    if missing:
        raise HeaderError(
            f"missing column(s): {', '.join(missing)}; the header has: "
            f"{', '.join(n for n in names if n) or '(nothing)'}; expected {_expected(required)}"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1 and n in REQUIRED_COLUMNS})
    if duplicated:
        raise HeaderError(f"column(s) appear more than once: {', '.join(duplicated)}")
    extras = tuple(n for n in names if n not in REQUIRED_COLUMNS)
    return HeaderInfo(delimiter, tuple(names), extras, has_bom)


def _expected(required: tuple[str, ...]) -> str:
    return ", ".join(required) + " (separated by comma, tab or semicolon)"


def column_names(header: HeaderInfo) -> list[str]:
    """Column names in file order; blank or repeated ones get `_c<i>` names (as Spark reads them)."""
    names: list[str] = []
    for i, name in enumerate(header.columns):
        names.append(name if name and name not in names else f"_c{i}")
    return names


# --- upload ids and object keys ----------------------------------------------------------------


def new_upload_id() -> str:
    """A fresh, unguessable upload id (128 random bits, hex)."""
    return secrets.token_hex(16)


def upload_key(upload_id: str) -> str:
    """The object key of an upload: derived from its id only, never from a client's filename."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidKeyError(f"not an upload id: {upload_id[:80]!r} (expected 32 hex digits)")
    return f"{UPLOAD_PREFIX}{upload_id}.csv"


def upload_id_from_key(key: str) -> str:
    """The upload id inside a key; refuses any key outside the upload-key pattern."""
    match = _UPLOAD_KEY.fullmatch(key)
    if not match:
        raise InvalidKeyError(f"object key {key[:120]!r} is outside the upload prefix")
    return match.group(1)


# --- the upload event --------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadEvent:
    """A stored upload, announced on the uploads topic. Small: the file never travels in Kafka."""

    upload_id: str
    url: str
    size: int
    sha256: str
    filename: str
    uploaded_at: str
    schema_version: int = field(default=EVENT_SCHEMA_VERSION)
    #: The history mode the uploader asked for (replace, append, reject); None: the setting.
    #: Optional, so events without it (and consumers that ignore it) stay valid.
    mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["mode"] is None:
            del data["mode"]  # the event as it was before modes: the setting applies
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Any) -> UploadEvent:
        """Parse and validate; raises InvalidEventError naming the first problem."""
        if not isinstance(data, dict):
            raise InvalidEventError("event is not a JSON object")
        version = data.get("schema_version")
        if version != EVENT_SCHEMA_VERSION:
            raise InvalidEventError(
                f"unsupported schema_version {version!r} (expected {EVENT_SCHEMA_VERSION})"
            )
        types: dict[str, type] = {
            "upload_id": str,
            "url": str,
            "size": int,
            "sha256": str,
            "filename": str,
            "uploaded_at": str,
        }
        for name, kind in types.items():
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InvalidEventError(f"field {name!r} missing or not a {kind.__name__}")
        if not _UPLOAD_ID.fullmatch(data["upload_id"]):
            raise InvalidEventError("field 'upload_id' is not 32 hex digits")
        if not _SHA256.fullmatch(data["sha256"]):
            raise InvalidEventError("field 'sha256' is not 64 lowercase hex digits")
        if data["size"] < 0:
            raise InvalidEventError("field 'size' is negative")
        mode = data.get("mode")
        if mode is not None and mode not in MODES:
            raise InvalidEventError(f"field 'mode' is not one of {', '.join(MODES)}")
        return cls(**{name: data[name] for name in types}, mode=mode)

    @classmethod
    def from_json(cls, raw: bytes | None) -> UploadEvent:
        if raw is None:
            raise InvalidEventError("event has no value")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEventError(f"event is not JSON: {exc.__class__.__name__}") from None
        return cls.from_dict(data)
