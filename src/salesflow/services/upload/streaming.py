"""Receive a multipart upload as a stream: check the CSV header, then pipe the file into storage.

The body is parsed chunk by chunk with python-multipart's streaming parser (FastAPI's UploadFile
would spool the whole file to disk first). Only the first bytes of the file part are buffered, until
the header line is complete; they are checked BEFORE anything is written. The rest goes, in batches
through a short queue to a thread of the upload's own (`_Pipeline`), both to the preview's
`Inspector` and to the object writer, while the event loop receives the next batches: memory stays
flat (a few batches) and the event loop never blocks. Any failure (bad header, size limit,
non-UTF-8 bytes, a quote never closed, idle client, disconnect, full disk) aborts the writer:
nothing is stored. `store_upload` is the whole use case: receive, then record the upload, its
preview and its outbox event.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from salesflow.config import Settings
from salesflow.errors import (
    BodyTimeoutError,
    BusyError,
    InputError,
    TooLargeError,
    UnsupportedMediaError,
)
from salesflow.sales.contract import HEADER_PROBE_BYTES, HeaderInfo, check_header, upload_key
from salesflow.sales.preview import Inspector
from salesflow.services.upload.db import UploadDB, utc_now
from salesflow.services.upload.outbox import event_of
from salesflow.services.upload.record import NewUpload, UploadRecord
from salesflow.storage import ObjectInfo, ObjectStore, ObjectWriter

__all__ = ["Received", "UploadSlots", "receive_upload", "sanitise_filename", "store_upload"]

log = logging.getLogger(__name__)

#: Bytes handed to the storage thread at once: few thread hops, still a flat ~1 MiB per batch.
WRITE_BATCH = 1024 * 1024
#: Batches waiting for the storage thread while the event loop receives more; when they are all
#: taken the upload waits (and TCP slows the client down): at most ~(this + 3) MiB per upload
#: (one batch being written, one waiting to be queued, one filling).
PIPELINE_BATCHES = 4
#: Allowance for multipart framing (boundaries, part headers, small extra fields) above the file
#: size limit, when judging the whole body's Content-Length or byte count.
FRAMING_ALLOWANCE = 1024 * 1024
#: Longest stored filename, in characters (common filesystem limit).
MAX_FILENAME_CHARS = 255
#: Longest header line of a multipart part. python-multipart's default (~4 kB) refuses a long
#: filename that we would rather accept and truncate; 64 KiB still bounds what a part header holds.
MAX_PART_HEADER_BYTES = 64 * 1024
FILE_FIELD = "file"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip"}
#: Control bytes no CSV text holds (tab, LF, FF and CR allowed): their presence means binary.
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f]")
_DEFAULTS = Settings.model_fields


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
            raise BusyError(f"{self.limit} uploads are already in progress; retry in a moment")
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
    """The file part's bytes: the header probe, the pending batch, and the preview's inspector.

    The batch is a list of views into the received chunks, joined once when it is taken: one
    copy per byte on the event loop rather than three (slice, append, take).
    """

    max_bytes: int
    preview_max_bytes: int
    max_field_bytes: int
    probe: bytearray = field(default_factory=bytearray)
    header: HeaderInfo | None = None
    inspector: Inspector | None = None
    batch: list[bytes | memoryview] = field(default_factory=list)
    batch_size: int = 0
    size: int = 0

    def add(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the file part (`data` must not change afterwards)."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLargeError(f"the file is larger than the limit of {self.max_bytes} bytes")
        if self.header is None:
            self.probe += data
            if b"\n" in self.probe or len(self.probe) >= HEADER_PROBE_BYTES:
                self.check_probe()
        else:
            self.batch.append(data)
            self.batch_size += len(data)

    def check_probe(self) -> None:
        """Refuse compressed or binary files and bad headers; then the probe joins the batch."""
        head = bytes(self.probe)
        for magic, kind in _COMPRESSED.items():
            if head.startswith(magic):
                raise UnsupportedMediaError(
                    f"compressed files are not accepted ({kind} detected); upload the CSV itself"
                )
        if (binary := _BINARY.search(head)) is not None:
            byte = binary.group()[0]
            name = "NUL" if byte == 0 else f"control 0x{byte:02x}"
            raise UnsupportedMediaError(
                f"the file looks binary ({name} byte near its start), not a CSV text file"
            )
        self.header = check_header(head[:HEADER_PROBE_BYTES])
        self.inspector = Inspector(
            self.header, self.preview_max_bytes, max_field_bytes=self.max_field_bytes
        )
        self.batch.append(bytes(self.probe))
        self.batch_size += len(self.probe)
        self.probe = bytearray()

    def take_batch(self, *, minimum: int = WRITE_BATCH) -> bytes | None:
        """The pending bytes as one batch, if there are at least `minimum` (and at least one)."""
        if self.batch_size < max(minimum, 1):
            return None
        data = b"".join(self.batch)
        self.batch.clear()
        self.batch_size = 0
        return data


class _Form:
    """Follows the multipart body through python-multipart's callbacks and routes the bytes of
    the `file` part into a _Sink; every other part is skipped without being kept.

    The parser holds the form's bound methods and the form holds the parser: `close` breaks that
    cycle, so the sink and its inspector (~3 MB of line hashes) go as soon as the upload ends,
    not at the next full garbage collection (until then they overlapped the next upload: its
    peak RSS to S3 was 4-5 MB higher).
    """

    def __init__(self, boundary: bytes, sink: _Sink) -> None:
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
            if self.sink.header is None:
                self.sink.check_probe()  # a file shorter than one line

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


async def _chunks_with_deadline(
    stream: AsyncIterator[bytes], idle_timeout_s: float
) -> AsyncGenerator[bytes, None]:
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
    preview_max_bytes: int = _DEFAULTS["preview_max_bytes"].default,
    max_field_bytes: int = _DEFAULTS["max_field_bytes"].default,
) -> Received:
    """Stream the body's `file` part into `store` under `key`; commit only a complete, valid file.

    Raises UnsupportedMediaError, HeaderError, TooLargeError, BodyTimeoutError, InputError (the
    preview's NotUtf8Error, UnterminatedQuoteError, FieldTooLongError, NoRowsError among them),
    StorageError (or the ClientDisconnect of the stream); the writer is aborted on every failure.
    """
    boundary = boundary_of(content_type)
    body_limit = max_bytes + FRAMING_ALLOWANCE
    if content_length is not None and content_length > body_limit:
        raise TooLargeError(f"the upload is larger than the limit of {max_bytes} bytes")
    sink = _Sink(max_bytes, preview_max_bytes, max_field_bytes)
    form = _Form(boundary, sink)
    pipeline: _Pipeline | None = None
    body_bytes = 0

    async def flush(minimum: int = WRITE_BATCH) -> None:
        nonlocal pipeline
        if sink.inspector is None or (data := sink.take_batch(minimum=minimum)) is None:
            return
        if pipeline is None:
            writer = await anyio.to_thread.run_sync(store.writer, key)
            pipeline = _Pipeline(sink.inspector, writer)
        await pipeline.put(data)

    try:
        async with aclosing(_chunks_with_deadline(stream, idle_timeout_s)) as body:
            async for chunk in body:
                body_bytes += len(chunk)
                if body_bytes > body_limit:  # framing or extra fields beyond any sane size
                    raise TooLargeError(f"the upload is larger than the limit of {max_bytes} bytes")
                form.feed(chunk)
                await flush()
        form.check_complete()
        await flush(minimum=1)
        assert sink.inspector is not None and pipeline is not None  # the part had a valid header
        await pipeline.finish()  # every batch inspected and written, or the first error
        preview = await anyio.to_thread.run_sync(sink.inspector.finish)  # may refuse the file
        info = await anyio.to_thread.run_sync(pipeline.writer.commit)
    except BaseException:
        if pipeline is not None:
            with anyio.CancelScope(shield=True):
                await pipeline.stop()
                await anyio.to_thread.run_sync(_abort_quietly, pipeline.writer)
        raise
    finally:
        form.close()
    return Received(info=info, filename=form.filename, preview=preview.to_dict())


_END = b""  # what ends a pipeline's queue (an empty batch is never queued)


class _Pipeline:
    """One upload's batches, inspected then written (`_inspect_and_write`) on a thread of its own.

    The event loop queues a batch and goes back to receiving the next; it waits only when
    PIPELINE_BATCHES are queued. A failure on the thread (say, invalid UTF-8 or a full disk) is
    raised to the event loop by the next `put` or by `finish`; the batches behind it are dropped.
    (Waiting for each batch's hop to a worker thread, as before, left the receiving side idle
    while the batch was hashed and written: 1 GB over HTTP ran at 190-207 MB/s, 292-355 with
    the pipeline in the same hand runs; session 9's writeback and uvloop took it to 418-481.)
    """

    def __init__(self, inspector: Inspector, writer: ObjectWriter) -> None:
        self.writer = writer
        self._inspector = inspector
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=PIPELINE_BATCHES)
        self._error: BaseException | None = None
        self._dropping = False  # set by stop(): skip what is still queued
        self._thread = threading.Thread(target=self._run, name="upload-pipeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not _END:
            if self._error is None and not self._dropping:
                try:
                    _inspect_and_write(self._inspector, self.writer, data)
                except BaseException as exc:  # handed to the event loop, which re-raises it
                    self._error = exc

    async def put(self, data: bytes) -> None:
        """Queue a batch; waits (on a worker thread) while the queue is full."""
        self._raise_failure()
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            await anyio.to_thread.run_sync(self._queue.put, data)

    async def finish(self) -> None:
        """Wait until every queued batch is inspected and written; raise the thread's failure."""
        await self._end()
        self._raise_failure()

    async def stop(self) -> None:
        """Drop what is still queued and wait for the thread to end (before the writer aborts)."""
        self._dropping = True
        await self._end()

    async def _end(self) -> None:
        if self._thread.is_alive():
            await anyio.to_thread.run_sync(self._queue.put, _END)
            await anyio.to_thread.run_sync(self._thread.join)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error


def _inspect_and_write(inspector: Inspector, writer: ObjectWriter, data: bytes) -> None:
    """One batch: inspected first (a fatal problem skips the write), then written. (A thread for
    the inspector and one for the writer measured no faster: their Python parts take turns on the
    GIL.)"""
    inspector.feed(data)
    writer.write(data)


def _abort_quietly(writer: ObjectWriter) -> None:
    try:
        writer.abort()
    except Exception:
        log.warning("could not abort the write of %s", writer.key, exc_info=True)


async def store_upload(
    stream: AsyncIterator[bytes],
    *,
    upload_id: str,
    content_type: str | None,
    content_length: int | None,
    settings: Settings,
    store: ObjectStore,
    db: UploadDB,
    force: bool = False,
) -> tuple[UploadRecord, bool]:
    """The upload use case: stream the file in, then record it with its outbox event.

    Returns (record, duplicate). A duplicate (same sha256, not forced) answers with the earlier
    upload and the copy just written is deleted; if recording fails the object is deleted too,
    so an object never outlives a missing row.
    """
    key = upload_key(upload_id)
    received = await receive_upload(
        stream,
        content_type=content_type,
        content_length=content_length,
        store=store,
        key=key,
        max_bytes=settings.max_upload_bytes,
        idle_timeout_s=settings.upload_idle_timeout_s,
        preview_max_bytes=settings.preview_max_bytes,
        max_field_bytes=settings.max_field_bytes,
    )
    info = received.info
    assert info.sha256 is not None, "a writer's commit always hashes what it wrote"
    upload = NewUpload(
        upload_id=upload_id,
        key=key,
        url=info.url,
        size=info.size,
        sha256=info.sha256,
        filename=received.filename,
        created_at=utc_now(),
        preview=received.preview,
    )
    event = event_of(upload)
    try:
        stored, duplicate = await anyio.to_thread.run_sync(
            lambda: db.add_upload(upload, event, settings.kafka_uploads_topic, force=force)
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store.delete, key)
        raise
    if duplicate:
        await anyio.to_thread.run_sync(store.delete, key)
    return stored, duplicate
