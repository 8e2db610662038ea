"""Receive an upload as a stream and record it: the upload service's use case.

`receive_upload` parses the multipart body chunk by chunk (multipart.py) and sends the file part
through a `FileSink` and a `StorePipeline` (pipeline.py): the CSV header is checked before anything
is written, then the file is inspected for its preview and written to storage in batches. Any
failure (bad header, size limit, non-UTF-8 bytes, a quote never closed, idle client, disconnect,
full disk) aborts the writer: nothing is stored. `store_upload` is the whole use case: receive,
then record the upload, its preview and its outbox event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from salesflow.config import Settings
from salesflow.errors import BodyTimeoutError, BusyError, TooLargeError
from salesflow.sales.contract import upload_key
from salesflow.services.upload.db import UploadDB, utc_now
from salesflow.services.upload.multipart import MultipartForm, boundary_of
from salesflow.services.upload.outbox import event_of
from salesflow.services.upload.pipeline import WRITE_BATCH, FileSink, StorePipeline, abort_quietly
from salesflow.services.upload.record import NewUpload, UploadRecord
from salesflow.storage import ObjectInfo, ObjectStore

__all__ = ["Received", "UploadSlots", "receive_upload", "store_upload"]

#: Allowance for multipart framing (boundaries, part headers, small extra fields) above the file
#: size limit, when judging the whole body's Content-Length or byte count.
FRAMING_ALLOWANCE = 1024 * 1024
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
    sink = FileSink(max_bytes, preview_max_bytes, max_field_bytes)
    form = MultipartForm(boundary, sink)
    pipeline: StorePipeline | None = None
    body_bytes = 0

    async def flush(minimum: int = WRITE_BATCH) -> None:
        nonlocal pipeline
        if sink.inspector is None or (data := sink.take_batch(minimum=minimum)) is None:
            return
        if pipeline is None:
            writer = await anyio.to_thread.run_sync(store.writer, key)
            pipeline = StorePipeline(sink.inspector, writer)
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
        # may refuse the file (badly ended, no rows, every row would be rejected)
        preview = await anyio.to_thread.run_sync(sink.inspector.finish_for_upload)
        info = await anyio.to_thread.run_sync(pipeline.writer.commit)
    except BaseException:
        if pipeline is not None:
            with anyio.CancelScope(shield=True):
                await pipeline.stop()
                await anyio.to_thread.run_sync(abort_quietly, pipeline.writer)
        raise
    finally:
        form.close()
    return Received(info=info, filename=form.filename, preview=preview.to_dict())


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
    mode: str | None = None,
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
        mode=mode,
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
