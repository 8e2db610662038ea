"""Receive a multipart upload as a stream: check the CSV header, then pipe the file into storage.

The body is parsed chunk by chunk with python-multipart's streaming parser (FastAPI's UploadFile
would spool the whole file to disk first). Only the first bytes of the file part are buffered, until
the header line is complete; they are checked BEFORE anything is written. The rest goes to the object
writer in batches on a worker thread, so memory stays flat and the event loop never blocks. Any
failure (bad header, size limit, idle client, disconnect, full disk) aborts the writer: nothing is
stored.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from salesflow.errors import (
    BodyTimeoutError,
    BusyError,
    InputError,
    TooLargeError,
    UnsupportedMediaError,
)
from salesflow.schema import HEADER_PROBE_BYTES, HeaderInfo, check_header
from salesflow.storage import ObjectInfo, ObjectStore, ObjectWriter

__all__ = ["Received", "UploadSlots", "receive_upload", "sanitise_filename"]

log = logging.getLogger(__name__)

#: Bytes handed to the storage thread at once: few thread hops, still a flat ~1 MiB per upload.
WRITE_BATCH = 1024 * 1024
#: Allowance for multipart framing (boundaries, part headers, small extra fields) above the file
#: size limit, when judging the whole body's Content-Length or byte count.
FRAMING_ALLOWANCE = 1024 * 1024
#: Longest stored filename, in characters (common filesystem limit).
MAX_FILENAME_CHARS = 255
FILE_FIELD = "file"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip"}


@dataclass
class Received:
    """A file that was streamed into storage and committed."""

    info: ObjectInfo
    filename: str
    preview: dict[str, Any]


class UploadSlots:
    """A non-blocking limit on uploads in flight: a full house answers 503 at once, never queues."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def acquire(self) -> None:
        """Take a slot or raise BusyError. Runs on the event loop, so no lock is needed."""
        if self.in_use >= self.limit:
            raise BusyError(
                f"{self.limit} uploads are already in progress; retry in a moment"
            )
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1


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


@dataclass
class _Sink:
    """The file part's bytes: the header probe, the preview counters and the pending batch."""

    max_bytes: int
    probe: bytearray = field(default_factory=bytearray)
    header: HeaderInfo | None = None
    batch: bytearray = field(default_factory=bytearray)
    size: int = 0
    newlines: int = 0
    last_byte: bytes = b""

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLargeError(
                f"the file is larger than the limit of {self.max_bytes} bytes"
            )
        self.newlines += data.count(b"\n")
        self.last_byte = data[-1:]
        if self.header is None:
            self.probe += data
            if b"\n" in self.probe or len(self.probe) >= HEADER_PROBE_BYTES:
                self.check_probe()
        else:
            self.batch += data

    def check_probe(self) -> None:
        """Refuse compressed or binary files and bad headers; then the probe joins the batch."""
        head = bytes(self.probe)
        for magic, kind in _COMPRESSED.items():
            if head.startswith(magic):
                raise UnsupportedMediaError(
                    f"compressed files are not accepted ({kind} detected); upload the CSV itself"
                )
        if b"\x00" in head:
            raise UnsupportedMediaError(
                "the file looks binary (NUL byte near its start), not a CSV text file"
            )
        self.header = check_header(head[:HEADER_PROBE_BYTES])
        self.batch += self.probe
        self.probe = bytearray()

    def take_batch(self, *, minimum: int = WRITE_BATCH) -> bytes | None:
        if len(self.batch) < minimum or not self.batch:
            return None
        data = bytes(self.batch)
        self.batch.clear()
        return data

    def preview(self) -> dict[str, Any]:
        assert self.header is not None
        lines = self.newlines + (1 if self.last_byte not in (b"", b"\n") else 0)
        return {
            "delimiter": self.header.delimiter,
            "columns": list(self.header.columns),
            "extra_columns": list(self.header.extra_columns),
            "lines": lines,
            "has_bom": self.header.has_bom,
        }


class _Parts:
    """python-multipart's callbacks turned into a list of (event, value) per fed chunk."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self._field = b""
        self._value = b""
        callbacks: Any = {
            "on_part_begin": lambda: self.events.append(("begin", None)),
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self.events.append(("headers_done", None)),
            "on_part_data": lambda d, s, e: self.events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_end": lambda: self.events.append(("finish", None)),
        }
        self.parser = MultipartParser(boundary, callbacks)

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self.events.append(("header", (self._field.lower(), self._value)))
        self._field, self._value = b"", b""

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InputError(f"malformed multipart body: {exc}") from None
        events, self.events = self.events, []
        return events


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


async def _chunks_with_deadline(
    stream: AsyncIterator[bytes], idle_timeout_s: float
) -> AsyncIterator[bytes]:
    """The body's chunks; BodyTimeoutError when no byte arrives for `idle_timeout_s`."""
    iterator = stream.__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTimeoutError(
                f"no data received for {idle_timeout_s:g} s; the upload was cancelled"
            ) from None
        yield chunk


async def receive_upload(
    stream: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: int | None,
    store: ObjectStore,
    key: str,
    max_bytes: int,
    idle_timeout_s: float,
) -> Received:
    """Stream the body's `file` part into `store` under `key`; commit only a complete, valid file.

    Raises UnsupportedMediaError, HeaderError, TooLargeError, BodyTimeoutError, InputError,
    StorageError (or the ClientDisconnect of the stream); the writer is aborted on every failure.
    """
    boundary = boundary_of(content_type)
    body_limit = max_bytes + FRAMING_ALLOWANCE
    if content_length is not None and content_length > body_limit:
        raise TooLargeError(f"the upload is larger than the limit of {max_bytes} bytes")
    parts = _Parts(boundary)
    sink = _Sink(max_bytes)
    writer: ObjectWriter | None = None
    headers: dict[bytes, bytes] = {}
    in_file = done = finished = False
    filename = ""
    body_bytes = 0

    async def flush(minimum: int = WRITE_BATCH) -> None:
        nonlocal writer
        if sink.header is None or (data := sink.take_batch(minimum=minimum)) is None:
            return
        if writer is None:
            writer = await anyio.to_thread.run_sync(store.writer, key)
        await anyio.to_thread.run_sync(writer.write, data)

    try:
        async for chunk in _chunks_with_deadline(stream, idle_timeout_s):
            body_bytes += len(chunk)
            if body_bytes > body_limit:
                raise TooLargeError(f"the upload is larger than the limit of {max_bytes} bytes")
            for event, value in parts.feed(chunk):
                if event == "begin":
                    headers = {}
                elif event == "header":
                    headers[value[0]] = value[1]
                elif event == "headers_done":
                    name, raw_name = _file_part_name(headers)
                    if name == FILE_FIELD:
                        if done:
                            raise InputError(f"more than one {FILE_FIELD!r} part; send one file")
                        in_file, filename = True, sanitise_filename(raw_name)
                elif event == "data" and in_file:
                    sink.add(value)
                elif event == "end" and in_file:
                    in_file, done = False, True
                    if sink.header is None:
                        sink.check_probe()  # a file shorter than one line
                elif event == "finish":
                    finished = True
            await flush()
        if not done:
            raise InputError(f"the multipart body has no complete {FILE_FIELD!r} file part")
        if not finished:
            raise InputError("the multipart body ended before its closing boundary")
        await flush(minimum=1)
        if writer is None:  # the file was only a header line without a newline... still a file
            writer = await anyio.to_thread.run_sync(store.writer, key)
        info = await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_abort_quietly, writer)
        raise
    return Received(info=info, filename=filename, preview=sink.preview())


def _abort_quietly(writer: ObjectWriter) -> None:
    try:
        writer.abort()
    except Exception:
        log.warning("could not abort the write of %s", writer.key, exc_info=True)

