"""Parse a multipart/form-data upload body as it streams in, passing on only the `file` part's bytes.

python-multipart's streaming parser is driven chunk by chunk (FastAPI's UploadFile would spool the
whole file to disk first); every other part is skipped without being kept.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from salesflow.errors import InputError, UnsupportedMediaError

__all__ = [
    "FILE_FIELD",
    "MAX_FILENAME_CHARS",
    "MultipartForm",
    "PartSink",
    "boundary_of",
    "sanitise_filename",
]

#: Longest stored filename, in characters (common filesystem limit).
MAX_FILENAME_CHARS = 255
#: Longest header line of a multipart part. python-multipart's default (~4 kB) refuses a long
#: filename that we would rather accept and truncate; 64 KiB still bounds what a part header holds.
MAX_PART_HEADER_BYTES = 64 * 1024
FILE_FIELD = "file"


class PartSink(Protocol):
    """Where the file part's bytes go."""

    def add(self, data: bytes | memoryview) -> None:
        """The next bytes of the file part (`data` must not change afterwards)."""

    def end(self) -> None:
        """The file part is complete."""


def sanitise_filename(raw: str) -> str:
    """A client filename made safe to keep as metadata: basename, no control chars, <= 255 chars."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))
    name = name.strip()
    return "" if name in (".", "..") else name[:MAX_FILENAME_CHARS]


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a request, or UnsupportedMediaError."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UnsupportedMediaError(
            f"expected a multipart/form-data body with a {FILE_FIELD!r} file field, "
            f"got {kind.decode('latin-1') or 'no content type'}"
        )
    return options[b"boundary"]


class MultipartForm:
    """Follows the multipart body through python-multipart's callbacks and routes the bytes of
    the `file` part into a PartSink; every other part is skipped without being kept.

    The parser holds the form's bound methods and the form holds the parser: `close` breaks that
    cycle, so the sink and its inspector (~3 MB of line hashes) go as soon as the upload ends,
    not at the next full garbage collection (until then they overlapped the next upload: its
    peak RSS to S3 was 4-5 MB higher).
    """

    def __init__(self, boundary: bytes, sink: PartSink) -> None:
        self.sink = sink
        self.filename = ""
        self.in_file = self.done = self.finished = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        callbacks: Any = {
            "on_part_begin": self._headers.clear,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        self.parser: MultipartParser | None = MultipartParser(
            boundary, callbacks, max_header_size=MAX_PART_HEADER_BYTES
        )

    def feed(self, chunk: bytes) -> None:
        """Parse a chunk of the body; the file part's bytes go to the sink (which checks them)."""
        assert self.parser is not None, "fed after close()"
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InputError(f"malformed multipart body: {exc}") from None

    def close(self) -> None:
        """Drop the parser (and with it the callbacks' references to this form)."""
        self.parser = None

    def check_complete(self) -> None:
        """Raise unless the body held one whole file part and ended with its closing boundary."""
        if self.in_file:
            raise InputError("the multipart body ended inside the file part (interrupted upload?)")
        if not self.done:
            raise InputError(f"the multipart body has no complete {FILE_FIELD!r} file part")
        if not self.finished:
            raise InputError("the multipart body ended before its closing boundary")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        name, raw_filename = _file_part_name(self._headers)
        if name != FILE_FIELD:
            return
        if self.done:
            raise InputError(f"more than one {FILE_FIELD!r} part; send one file per upload")
        self.in_file, self.filename = True, sanitise_filename(raw_filename)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:  # a view, not a copy: the parser hands over immutable bytes
            self.sink.add(memoryview(data)[start:end])

    def _on_part_end(self) -> None:
        if self.in_file:
            self.in_file, self.done = False, True
            self.sink.end()

    def _on_end(self) -> None:
        self.finished = True


def _file_part_name(headers: dict[bytes, bytes]) -> tuple[str | None, str]:
    """(form field name, filename) from a part's Content-Disposition."""
    _, options = parse_options_header(headers.get(b"content-disposition", b""))
    name = options.get(b"name")
    raw = options.get(b"filename", b"")
    try:
        filename = raw.decode("utf-8")
    except UnicodeDecodeError:
        filename = raw.decode("latin-1")
    return (name.decode("latin-1") if name is not None else None), filename
