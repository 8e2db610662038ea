"""FileStore on a real temp folder: round trip, atomic commit, key checks, disk-full handling, URLs."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from salesflow import libc
from salesflow.config import Settings
from salesflow.errors import (
    InputError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
)
from salesflow.storage import FileStore, ObjectStore, S3Store, local, open_store, store_for

KEY = "uploads/0123456789abcdef0123456789abcdef.csv"
BODY = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n1,a,2.5,1,s,3,2024-01-01\n"


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "objects")


def files_under(root: Path) -> list[str]:
    """Every file on disk under root (temp files included), as posix paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_round_trip(store: FileStore) -> None:
    info = store.put(KEY, [BODY[:10], BODY[10:]])

    assert info.key == KEY
    assert info.size == len(BODY)
    assert info.sha256 == hashlib.sha256(BODY).hexdigest()
    assert info.url == (store.root / "uploads" / KEY.split("/")[1]).as_uri()
    with store.open(KEY) as src:
        assert src.read() == BODY
    assert store.read_head(KEY, 10) == BODY[:10]
    assert store.read_head(KEY, 10_000) == BODY
    head = store.head(KEY)
    assert (head.size, head.sha256) == (len(BODY), None)  # the file store records no hash
    assert store.checksum(KEY) == info
    assert store.list() == [KEY]
    store.delete(KEY)
    assert store.list() == []
    with pytest.raises(ObjectNotFoundError):
        store.head(KEY)


def test_put_file_and_large_object_hash(store: FileStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks plus a ragged tail
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    info = store.put_file("a/b/c.bin", source)

    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (store.root / "a" / "b" / "c.bin").read_bytes() == data


def test_nothing_visible_before_commit(store: FileStore) -> None:
    writer = store.writer(KEY)
    writer.write(BODY)

    assert store.list() == []
    assert not (store.root / KEY).exists()
    [temp] = files_under(store.root)  # the bytes are on disk, under a temp name only
    assert temp.startswith("uploads/.") and ".csv.tmp-" in temp

    writer.commit()
    assert store.list() == [KEY]
    assert files_under(store.root) == [KEY]


def test_abort_leaves_nothing(store: FileStore) -> None:
    writer = store.writer(KEY)
    writer.write(BODY)
    writer.abort()
    writer.abort()  # idempotent

    assert files_under(store.root) == []
    with pytest.raises(StorageError, match="already aborted"):
        writer.write(b"more")


def test_exception_inside_with_aborts(store: FileStore) -> None:
    with pytest.raises(RuntimeError, match="client went away"), store.writer(KEY) as writer:
        writer.write(BODY)
        raise RuntimeError("client went away")

    assert files_under(store.root) == []


def test_leaving_with_without_commit_publishes_nothing(store: FileStore) -> None:
    with store.writer(KEY) as writer:
        writer.write(BODY)

    assert files_under(store.root) == []


def test_commit_replaces_existing_object(store: FileStore) -> None:
    store.put(KEY, [b"old"])
    store.put(KEY, [b"new"])

    assert store.read_head(KEY, 100) == b"new"
    assert files_under(store.root) == [KEY]


def test_list_prefix_sorted_and_skips_temp_files(store: FileStore) -> None:
    for key in ["uploads/b.csv", "uploads/a.csv", "uploads/x/deep.csv", "other/c.csv", "top"]:
        store.put(key, [b"x"])
    pending = store.writer("uploads/pending.csv")
    pending.write(b"x")

    assert store.list() == [
        "other/c.csv",
        "top",
        "uploads/a.csv",
        "uploads/b.csv",
        "uploads/x/deep.csv",
    ]
    assert store.list("uploads/") == ["uploads/a.csv", "uploads/b.csv", "uploads/x/deep.csv"]
    assert store.list("uploads/a") == ["uploads/a.csv"]
    assert store.list("nothing/here/") == []
    pending.abort()


@pytest.mark.parametrize(
    "key",
    [
        "../escape.csv",
        "uploads/../../escape.csv",
        "/etc/passwd",
        "uploads\\evil.csv",
        "uploads/a\x00.csv",
        "",
        "uploads//a.csv",
        "./a.csv",
        "uploads/",
        "uploads/.a.csv.tmp-0123456789abcdef",
        "k" * 1025,
    ],
)
def test_unsafe_keys_are_refused(store: FileStore, key: str) -> None:
    for call in (store.writer, store.open, store.head, store.delete, store.url_for):
        with pytest.raises(InvalidKeyError) as caught:
            call(key)
        assert isinstance(caught.value, ValueError)  # an input error, mapped to 4xx at the edge
    assert not store.root.exists() or files_under(store.root) == []
    assert not (store.root.parent / "escape.csv").exists()


def test_traversal_prefix_is_refused(store: FileStore) -> None:
    with pytest.raises(InvalidKeyError, match=r"'\.\.'"):
        store.list("../")


def test_missing_object(store: FileStore) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"no object 'nope\.csv'"):
        store.open("nope.csv")
    with pytest.raises(ObjectNotFoundError):
        store.checksum("nope.csv")
    with pytest.raises(ObjectNotFoundError), store.local_path("nope.csv"):
        pass
    store.put("uploads/a.csv", [b"x"])
    with pytest.raises(ObjectNotFoundError):
        store.open("uploads")  # a folder is not an object
    store.delete("nope.csv")  # deleting a missing key is fine, as on S3


def test_local_path_is_the_file(store: FileStore) -> None:
    store.put(KEY, [BODY])
    with store.local_path(KEY) as path:
        assert path == store.root / KEY
        assert path.read_bytes() == BODY


def test_writeback_is_started_in_steps_while_writing(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITEBACK_STEP bytes the writer asks the kernel to start writing what came before
    (the real call still runs), so commit's fsync is left with little: contiguous ranges from 0,
    small writes flushed first, and the object intact."""
    real = libc.start_writeback
    calls: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, length: int) -> bool:
        calls.append((offset, length, os.fstat(fd).st_size))
        return real(fd, offset, length)

    monkeypatch.setattr(libc, "start_writeback", recording)
    step = local.WRITEBACK_STEP
    pieces = [b"x" * 100] * 3 + [os.urandom(1024 * 1024)] * 20 + [b"tail"]
    data = b"".join(pieces)

    info = store.put(KEY, pieces)

    assert [(offset, n) for offset, n, _ in calls] == [(0, step + 300), (step + 300, step)]
    assert all(size >= offset + n for offset, n, size in calls)  # flushed before the call
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    with store.open(KEY) as src:
        assert src.read() == data


class _FullDiskFile:
    """Wraps the writer's temp file; its writes fail as a full disk would."""

    def __init__(self, inner: Any, err: int) -> None:
        self._inner, self._err = inner, err

    def write(self, data: bytes) -> int:
        raise OSError(self._err, os.strerror(self._err))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_during_write(store: FileStore, err: int) -> None:
    """Filling a real disk needs root or a tiny mount, so the fault is injected into the temp file."""
    writer = store.writer(KEY)
    writer.write(b"first chunk fits")
    writer._file = _FullDiskFile(writer._file, err)  # type: ignore[attr-defined]

    with pytest.raises(
        StorageFullError, match=re.escape(f"no space left while writing {KEY!r}")
    ) as caught:
        writer.write(BODY)

    assert caught.value.code == "storage_full"
    assert files_under(store.root) == []  # aborted: temp file gone, no object
    with pytest.raises(StorageError, match="already aborted"):
        writer.commit()


def test_disk_full_during_commit(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync is where a buffered or network file system reports ENOSPC; injected for the same reason."""

    def full_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writer = store.writer(KEY)
    writer.write(BODY)
    monkeypatch.setattr(os, "fsync", full_fsync)

    with pytest.raises(StorageFullError, match="committing"):
        writer.commit()
    assert files_under(store.root) == []


def test_other_io_error_is_a_plain_storage_error(store: FileStore) -> None:
    """An I/O error that is not a full disk must not be reported as one (fault injected, as above)."""
    writer = store.writer(KEY)
    writer._file = _FullDiskFile(writer._file, errno.EIO)  # type: ignore[attr-defined]

    with pytest.raises(StorageError) as caught:
        writer.write(BODY)
    assert not isinstance(caught.value, StorageFullError)
    assert files_under(store.root) == []


# --- URLs --------------------------------------------------------------------------------------


def test_open_store_file_urls(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = open_store((tmp_path / "objs").as_uri(), settings)
    assert isinstance(absolute, FileStore)
    assert absolute.root == tmp_path / "objs"
    assert absolute.base_url == (tmp_path / "objs").as_uri()

    monkeypatch.chdir(tmp_path)
    relative = open_store("rel/objs", settings)
    assert isinstance(relative, FileStore)
    assert relative.root == tmp_path / "rel" / "objs"


def test_store_for_defaults_to_data_dir(settings: Settings) -> None:
    store: ObjectStore = store_for(settings)
    assert isinstance(store, FileStore)
    assert store.root == settings.data_dir / "objects"


def test_open_store_s3_url(settings: Settings) -> None:
    settings.s3_region = "us-east-1"  # so creating the client needs no AWS config
    store = open_store("s3://my-bucket/some/prefix/", settings)

    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("my-bucket", "some/prefix")
    assert store.base_url == "s3://my-bucket/some/prefix"
    assert store.url_for(KEY) == f"s3://my-bucket/some/prefix/{KEY}"
    bare = open_store("s3://my-bucket", settings)
    assert bare.url_for("k.csv") == "s3://my-bucket/k.csv"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/x", "use file:///absolute/folder or s3://bucket"),
        ("gs://bucket/x", "unsupported storage URL scheme 'gs'"),
        ("s3:///only-a-path", "has no bucket"),
        ("file://otherhost/data", "names a remote host"),
        ("s3://AKIAEXAMPLE:hunter2@bucket/p", "must not hold credentials"),
    ],
)
def test_open_store_refuses_other_urls(settings: Settings, url: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        open_store(url, settings)
    assert "hunter2" not in str(caught.value)
