"""The file part's way into storage: its header checked first, then batches inspected and written.

`FileSink` buffers only the first bytes of the file, until the header line is complete, and checks
them BEFORE anything is written; after that it gathers the bytes into batches. `StorePipeline`
feeds each batch, on a thread of the upload's own, to the preview's `Inspector` and then to the
object writer, while the event loop receives the next batches: memory stays flat (a few batches)
and the event loop never blocks.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from salesflow.errors import TooLargeError, UnsupportedMediaError
from salesflow.sales.contract import HEADER_PROBE_BYTES, HeaderInfo, check_header
from salesflow.sales.preview import Inspector
from salesflow.storage import ObjectWriter

__all__ = ["PIPELINE_BATCHES", "WRITE_BATCH", "FileSink", "StorePipeline", "abort_quietly"]

log = logging.getLogger(__name__)

#: Bytes handed to the storage thread at once: few thread hops, still a flat ~1 MiB per batch.
WRITE_BATCH = 1024 * 1024
#: Batches waiting for the storage thread while the event loop receives more; when they are all
#: taken the upload waits (and TCP slows the client down): at most ~(this + 3) MiB per upload
#: (one batch being written, one waiting to be queued, one filling).
PIPELINE_BATCHES = 4
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip"}
#: Control bytes no CSV text holds (tab, LF, FF and CR allowed): their presence means binary.
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f]")


@dataclass
class FileSink:
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

    def end(self) -> None:
        """The file part ended; a file shorter than one line has its probe checked now."""
        if self.header is None:
            self.check_probe()

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


_END = b""  # what ends a pipeline's queue (an empty batch is never queued)


class StorePipeline:
    """One upload's batches, inspected then written (`_inspect_and_write`) on a thread of its own.

    The event loop queues a batch and goes back to receiving the next; it waits only when
    PIPELINE_BATCHES are queued. A failure on the thread (say, invalid UTF-8 or a full disk) is
    raised to the event loop by the next `put` or by `finish`; the batches behind it are dropped.

    A thread of its own because awaiting a worker thread's hop per batch leaves the receiving side
    idle while the batch is hashed and written. Measured 2026-12-05, one 1 GB upload over HTTP, by
    hand: 190-207 MB/s awaiting each batch, 292-355 MB/s with this pipeline (1d34798); 418-481 MB/s
    with writeback during the write (d69f78b) and uvloop (86a4f2e) added.
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


def abort_quietly(writer: ObjectWriter) -> None:
    """Abort a write, logging (not raising) a failure: the error that caused the abort wins."""
    try:
        writer.abort()
    except Exception:
        log.warning("could not abort the write of %s", writer.key, exc_info=True)
