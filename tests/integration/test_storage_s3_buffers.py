"""S3 multipart parts are filled in reused buffers: bounded in number, never leaking old bytes."""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

import pytest

from salesflow.config import Settings
from salesflow.storage import S3Store, store_for
from salesflow.storage import s3 as s3_store
from tests.fixtures.s3 import S3_PREFIX, bucket_of

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
KEY = "uploads/00000000000000000000000000000001.csv"


class Counting(s3_store._PartBuffers):
    """The pool, counting buffers out at once and buffers ever allocated."""

    def __init__(self, keep: int) -> None:
        super().__init__(keep)
        self.lock = threading.Lock()
        self.out = self.peak = 0
        self.known: set[int] = set()

    def take(self, size: int) -> bytearray:
        buffer = super().take(size)
        with self.lock:
            self.out += 1
            self.peak = max(self.peak, self.out)
            self.known.add(id(buffer))
        return buffer

    def give(self, buffer: bytearray) -> None:
        with self.lock:
            self.out -= 1
        super().give(buffer)


def test_parts_reuse_a_bounded_set_of_buffers(
    s3_settings: Settings, s3_client: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = Counting(keep=2)
    monkeypatch.setattr(s3_store, "_PARTS", pool)
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MIB, "s3_max_concurrency": 2})
    store = store_for(settings)
    assert isinstance(store, S3Store)
    rng = random.Random(11)
    first = rng.randbytes(11 * MIB + 5)  # two full parts and a ragged third
    second = rng.randbytes(6 * MIB + 3)  # shorter: a reused buffer must not leak `first`'s tail
    for data in (first, second):
        with store.writer(KEY) as writer:
            for start in range(0, len(data), 900_000):
                writer.write(data[start : start + 900_000])
            info = writer.commit()
        raw = s3_client.get_object(Bucket=bucket_of(settings), Key=f"{S3_PREFIX}/{KEY}")
        assert raw["Body"].read() == data
        assert info.size == len(data)
    assert pool.out == 0  # every buffer came back
    assert pool.peak <= 2  # never more parts in memory than in flight (s3_max_concurrency)
    assert len(pool.known) <= 3  # the second upload reused the first one's buffers
