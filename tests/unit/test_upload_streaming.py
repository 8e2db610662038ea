"""receive_upload on a real FileStore: header probe, limits, deadlines, disconnects, preview."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.requests import ClientDisconnect

from salesflow.errors import (
    BodyTimeoutError,
    HeaderError,
    InputError,
    NotUtf8Error,
    StorageFullError,
    TooLargeError,
    UnsupportedMediaError,
)
from salesflow.sales.contract import HEADER_PROBE_BYTES
from salesflow.sales.preview import Inspector
from salesflow.services.upload.multipart import sanitise_filename
from salesflow.services.upload.pipeline import PIPELINE_BATCHES, WRITE_BATCH
from salesflow.services.upload.streaming import Received, UploadSlots, receive_upload
from salesflow.storage import FileStore, ObjectWriter

KEY = "uploads/0123456789abcdef0123456789abcdef.csv"
HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"
ROW = b"1,Widget,2.50,7,Main St,3,2024-01-01\n"
BOUNDARY = "test-boundary-7f3a"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(
    content: bytes, *, filename: str = "sales.csv", field: str = "file", close: bool = True
) -> bytes:
    """A multipart/form-data body with a small text field before the file part."""
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="note"\r\n\r\n'
        "hello\r\n"
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + content
    return body + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


def two_file_parts(content: bytes) -> bytes:
    part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        ).encode()
        + content
        + b"\r\n"
    )
    return part + part + f"--{BOUNDARY}--\r\n".encode()


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def pipeline_threads() -> list[str]:
    """Upload pipeline threads still alive (every receive must end its own)."""
    return [t.name for t in threading.enumerate() if t.name == "upload-pipeline"]


def files_under(root: Path) -> list[str]:
    """Every file on disk under root (temp files included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def receive(
    store: FileStore,
    stream: AsyncIterator[bytes],
    *,
    max_bytes: int = 10 * 1024 * 1024,
    idle_timeout_s: float = 5.0,
    content_type: str = CONTENT_TYPE,
    content_length: int | None = None,
) -> Received:
    async def main() -> Received:
        return await receive_upload(
            stream,
            content_type=content_type,
            content_length=content_length,
            store=store,
            key=KEY,
            max_bytes=max_bytes,
            idle_timeout_s=idle_timeout_s,
        )

    return anyio.run(main)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "objects")


def test_streams_file_part_with_hash_and_preview(store: FileStore) -> None:
    content = HEADER + ROW * 50_000  # ~1.9 MiB: crosses the 1 MiB write batch
    result = receive(store, chunks(multipart(content), size=4096))

    assert result.info.size == len(content)
    assert result.info.sha256 == hashlib.sha256(content).hexdigest()
    assert (store.root / KEY).read_bytes() == content
    assert result.filename == "sales.csv"
    preview = result.preview
    assert (preview["delimiter"], preview["columns"], preview["extra_columns"]) == (
        "comma",
        list(HEADER.decode().strip().split(",")),
        [],
    )
    assert (preview["lines"], preview["rows"], preview["duplicate_rows"]) == (
        50_001,
        50_000,
        49_999,
    )
    assert (preview["has_bom"], preview["complete"], preview["rejected"]) == (False, True, {})


def live_inspectors() -> int:
    return sum(isinstance(o, Inspector) for o in gc.get_objects())


def test_the_inspector_goes_when_the_upload_ends_without_a_gc(store: FileStore) -> None:
    """No reference cycle keeps a stored upload's inspector (its line hashes) alive into the next
    upload. (A refused one's stays until the next collection: the error's traceback holds it.)"""
    gc.collect()
    before = live_inspectors()
    gc.disable()
    try:
        receive(store, chunks(multipart(HEADER + ROW * 20_000)))
        assert live_inspectors() == before
    finally:
        gc.enable()


def test_header_split_over_one_byte_chunks(store: FileStore) -> None:
    content = HEADER + ROW
    result = receive(store, chunks(multipart(content), size=1))
    assert (store.root / KEY).read_bytes() == content
    assert result.preview["lines"] == 2


def test_preview_of_bom_semicolons_extras_and_no_final_newline(store: FileStore) -> None:
    header = HEADER.decode().strip().replace(",", ";") + ";region\r\n"
    content = b"\xef\xbb\xbf" + header.encode() + b"1;a;2;3;s;4;2024-01-01;north"
    result = receive(store, chunks(multipart(content)))
    assert result.preview["delimiter"] == "semicolon"
    assert result.preview["extra_columns"] == ["region"]
    assert result.preview["has_bom"] is True
    assert result.preview["lines"] == 2  # the last line has no newline but still counts


def test_header_only_without_newline_is_refused(store: FileStore) -> None:
    with pytest.raises(InputError, match="no data rows") as caught:
        receive(store, chunks(multipart(HEADER.rstrip(b"\n"))))
    assert getattr(caught.value, "code", None) == "no_rows"
    assert files_under(store.root) == []


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (
            b"\x1f\x8b\x08\x00" + b"\x00\n" * 100,
            UnsupportedMediaError,
            "compressed files are not accepted",
        ),
        (b"PK\x03\x04" + b"x" * 100, UnsupportedMediaError, "zip detected"),
        (b"product_id\x00,x\n", UnsupportedMediaError, "NUL byte"),
        (b"product_id,date\n" + ROW * 10, HeaderError, "missing column(s): product_name"),
        (b"", HeaderError, "the file is empty"),
        (b"a" * (HEADER_PROBE_BYTES + 10), HeaderError, "no end of header line"),
    ],
)
def test_bad_files_are_refused_before_anything_is_written(
    store: FileStore, content: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        receive(store, chunks(multipart(content)))
    assert message in str(caught.value)
    assert files_under(store.root) == []


@pytest.mark.parametrize("size_of_file", [5_000, 3 * 1024 * 1024])
def test_size_limit_while_streaming(store: FileStore, size_of_file: int) -> None:
    """Small and larger-than-one-batch files: the writer is aborted either way, no temp file left."""
    content = HEADER + ROW * (size_of_file // len(ROW))
    limit = len(content) - 100
    with pytest.raises(TooLargeError, match=f"limit of {limit} bytes"):
        receive(store, chunks(multipart(content)), max_bytes=limit)
    assert files_under(store.root) == []


def test_declared_content_length_over_limit_is_refused_unread(store: FileStore) -> None:
    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body must not be read")
        yield b""  # pragma: no cover

    with pytest.raises(TooLargeError):
        receive(store, never(), max_bytes=1000, content_length=5 * 1024 * 1024)


def test_idle_client_times_out_and_nothing_is_stored(store: FileStore) -> None:
    body = multipart(HEADER + ROW * 40_000)

    async def stalls() -> AsyncIterator[bytes]:
        yield body[: 1024 * 1024 + 5000]  # past one write batch: the writer exists
        await anyio.sleep(30)
        yield body  # pragma: no cover

    with pytest.raises(BodyTimeoutError, match=r"no data received for 0\.2 s"):
        receive(store, stalls(), idle_timeout_s=0.2)
    assert files_under(store.root) == []
    assert pipeline_threads() == []


def test_client_disconnect_aborts(store: FileStore) -> None:
    body = multipart(HEADER + ROW * 60_000)

    async def hangs_up() -> AsyncIterator[bytes]:
        async for chunk in chunks(body[: 2 * 1024 * 1024]):
            yield chunk
        raise ClientDisconnect()

    with pytest.raises(ClientDisconnect):
        receive(store, hangs_up())
    assert files_under(store.root) == []
    assert pipeline_threads() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (multipart(HEADER + ROW, close=False), "ended inside the file part"),
        (
            multipart(HEADER + ROW, close=False) + f"\r\n--{BOUNDARY}\r\n".encode(),
            "ended before its closing boundary",
        ),
        (multipart(HEADER + ROW, field="other"), "no complete 'file' file part"),
        (two_file_parts(HEADER + ROW), "more than one 'file' part"),
        (b"--" + BOUNDARY.encode() + b"\r\nno-colon-header\r\n\r\n", "malformed multipart body"),
    ],
)
def test_incomplete_or_malformed_bodies(store: FileStore, body: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        receive(store, chunks(body))
    assert files_under(store.root) == []


def test_not_multipart_is_415(store: FileStore) -> None:
    with pytest.raises(UnsupportedMediaError, match="expected a multipart/form-data body"):
        receive(store, chunks(HEADER + ROW), content_type="text/csv")


class FullDiskStore(FileStore):
    """A FileStore whose writes fail with ENOSPC after the first batch (a real full disk needs root)."""

    def writer(self, key: str) -> ObjectWriter:
        writer = super().writer(key)
        inner: Any = writer._file  # type: ignore[attr-defined]

        class Full:
            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        writer._file = Full()  # type: ignore[attr-defined]
        return writer


def test_full_disk_aborts(tmp_path: Path) -> None:
    store = FullDiskStore(tmp_path / "objects")
    with pytest.raises(StorageFullError):
        receive(store, chunks(multipart(HEADER + ROW * 40_000)))
    assert files_under(store.root) == []
    assert pipeline_threads() == []


def test_a_late_failure_on_the_pipeline_thread_is_raised_and_nothing_is_stored(
    store: FileStore,
) -> None:
    """Invalid UTF-8 several batches in: found on the pipeline thread, raised by the receiver."""
    good = HEADER + ROW * (7 * WRITE_BATCH // (2 * len(ROW)))  # ~3.5 MiB of valid rows
    content = good + b"1,Caf\xe9,2.50,7,Main St,3,2024-01-01\n" + ROW * 60_000
    with pytest.raises(NotUtf8Error, match=f"invalid UTF-8 at byte offset {len(good) + 5} "):
        receive(store, chunks(multipart(content)))
    assert files_under(store.root) == []
    assert pipeline_threads() == []


class SlowStore(FileStore):
    """A FileStore whose writer takes 20 ms per batch and records how far the body was read
    ahead of the bytes written (`leads`)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.received = 0
        self.leads: list[int] = []

    def writer(self, key: str) -> ObjectWriter:
        writer = super().writer(key)
        inner = writer._write  # type: ignore[attr-defined]
        written = 0

        def slow_write(data: bytes) -> None:
            nonlocal written
            time.sleep(0.02)
            inner(data)
            written += len(data)
            self.leads.append(self.received - written)

        writer._write = slow_write  # type: ignore[method-assign]
        return writer


def test_the_body_is_read_ahead_of_a_slow_writer_within_a_bound(tmp_path: Path) -> None:
    """The receiver keeps reading while batches are written (pipelined), but never more than
    PIPELINE_BATCHES batches ahead (flat memory; TCP slows the client down instead)."""
    store = SlowStore(tmp_path / "objects")
    content = HEADER + ROW * (16 * WRITE_BATCH // len(ROW))  # 16 MiB: 16 batches
    chunk = 64 * 1024

    async def counted() -> AsyncIterator[bytes]:
        async for piece in chunks(multipart(content), size=chunk):
            store.received += len(piece)
            yield piece

    result = receive(store, counted(), max_bytes=len(content))
    assert result.info.sha256 == hashlib.sha256(content).hexdigest()
    assert len(store.leads) >= 16
    # one batch being written, PIPELINE_BATCHES queued, one waiting to be queued, one filling
    bound = (PIPELINE_BATCHES + 3) * (WRITE_BATCH + chunk)
    assert 2 * WRITE_BATCH < max(store.leads) <= bound


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../x.csv", "x.csv"),
        ("C:\\Users\\me\\sales.csv", "sales.csv"),
        ("bad\x00name\x1b[31m.csv", "badname[31m.csv"),
        ("..", ""),
        ("é" * 300 + ".csv", "é" * 255),
    ],
)
def test_sanitise_filename(raw: str, clean: str) -> None:
    assert sanitise_filename(raw) == clean


def test_upload_slots_refuse_when_full() -> None:
    slots = UploadSlots(2)
    slots.acquire()
    slots.acquire()
    with pytest.raises(Exception, match="2 uploads are already in progress") as caught:
        slots.acquire()
    assert getattr(caught.value, "code", None) == "busy"
    slots.release()
    slots.acquire()  # a released slot is usable again
    assert slots.in_use == 2
