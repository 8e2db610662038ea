"""S3Store against a real S3 API (moto's server on 127.0.0.1): round trip, multipart, abort, staging."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import zlib
from typing import TYPE_CHECKING, Any

import pytest

from salesflow.config import Settings
from salesflow.errors import ObjectNotFoundError, StorageError
from salesflow.storage import S3Store, store_for
from tests.fixtures.s3 import S3_PREFIX, bucket_of

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEY = "uploads/0123456789abcdef0123456789abcdef.csv"
BODY = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n1,a,2.5,1,s,3,2024-01-01\n"
MIB = 1024 * 1024


def s3_store(settings: Settings) -> S3Store:
    store = store_for(settings)
    assert isinstance(store, S3Store)
    return store


def pending_uploads(client: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


class InFlight:
    """Counts UploadPart calls running and finished, through botocore's own event hooks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.done = 0

    def start(self, **_: Any) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def end(self, **_: Any) -> None:
        with self.lock:
            self.now -= 1
            self.done += 1


def test_round_trip(s3_settings: Settings, s3_client: S3Client) -> None:
    store = s3_store(s3_settings)
    bucket = bucket_of(s3_settings)

    info = store.put(KEY, [BODY[:7], BODY[7:]])

    sha = hashlib.sha256(BODY).hexdigest()
    assert (info.key, info.size, info.sha256) == (KEY, len(BODY), sha)
    assert info.url == f"s3://{bucket}/{S3_PREFIX}/{KEY}"
    raw = s3_client.get_object(Bucket=bucket, Key=f"{S3_PREFIX}/{KEY}")
    assert raw["Body"].read() == BODY  # stored under the store's prefix
    assert store.head(KEY) == info  # a single put records the sha256 as metadata
    with store.open(KEY) as src:
        assert src.read() == BODY
    assert store.read_head(KEY, 10) == BODY[:10]
    assert store.read_head(KEY, 10_000) == BODY
    assert store.checksum(KEY) == info
    s3_client.put_object(Bucket=bucket, Key="outside-the-prefix.csv", Body=b"x")
    store.put("other/b.csv", [b"b"])
    assert store.list() == ["other/b.csv", KEY]
    assert store.list("uploads/") == [KEY]
    store.delete(KEY)
    assert store.list() == ["other/b.csv"]
    with pytest.raises(ObjectNotFoundError):
        store.head(KEY)


def test_empty_object(s3_settings: Settings) -> None:
    store = s3_store(s3_settings)
    info = store.put("empty.csv", [])

    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert store.read_head("empty.csv", 100) == b""  # S3 answers a range on it with InvalidRange
    assert store.checksum("empty.csv").size == 0


def test_multipart_object(s3_settings: Settings, s3_client: S3Client) -> None:
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MIB, "s3_max_concurrency": 2})
    store = s3_store(settings)
    data = random.Random(7).randbytes(17 * MIB + 12345)  # three full parts and a ragged fourth
    in_flight = InFlight()
    store.client.meta.events.register("before-call.s3.UploadPart", in_flight.start)
    store.client.meta.events.register("after-call.s3.UploadPart", in_flight.end)

    with store.writer(KEY) as writer:
        for start in range(0, len(data), 700_000):  # chunks that do not line up with parts
            writer.write(data[start : start + 700_000])
            cut = min(start + 700_000, len(data)) // (5 * MIB)
            # memory bound: write() waits until at most s3_max_concurrency cut parts are unfinished
            assert cut - in_flight.done <= 2
        info = writer.commit()

    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    raw = s3_client.head_object(
        Bucket=bucket_of(settings), Key=f"{S3_PREFIX}/{KEY}", ChecksumMode="ENABLED"
    )
    assert raw["ETag"].strip('"').endswith("-4")  # a four-part multipart object
    # CRC32 declared when the upload was created: S3 checks each part's and keeps the composite
    # (the CRC32 of the parts' CRC32s; AWS adds "-4"). Without the declaration none is kept.
    assert raw.get("ChecksumCRC32", "").removesuffix("-4") == composite_crc32(data, 5 * MIB)
    assert (in_flight.done, in_flight.peak) == (4, 2)  # parts did go up in parallel
    head = store.head(KEY)
    assert (head.size, head.sha256) == (len(data), None)  # multipart: no sha256 metadata
    assert store.checksum(KEY) == info
    assert pending_uploads(s3_client, bucket_of(settings)) == []


def test_multipart_crc32_can_be_turned_off(s3_settings: Settings, s3_client: S3Client) -> None:
    """For an S3-compatible store that refuses x-amz-checksum-algorithm: nothing declared."""
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MIB, "s3_multipart_crc32": False})
    data = random.Random(8).randbytes(11 * MIB)
    info = s3_store(settings).put(KEY, [data])
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    raw = s3_client.head_object(
        Bucket=bucket_of(settings), Key=f"{S3_PREFIX}/{KEY}", ChecksumMode="ENABLED"
    )
    assert raw["ETag"].strip('"').endswith("-3")
    assert "ChecksumCRC32" not in raw


def composite_crc32(data: bytes, part_size: int) -> str:
    """S3's checksum of a multipart object: base64 of the CRC32 of its parts' CRC32s."""
    parts = (data[i : i + part_size] for i in range(0, len(data), part_size))
    crcs = b"".join(zlib.crc32(part).to_bytes(4, "big") for part in parts)
    return base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()


def test_abort_after_parts_leaves_nothing(s3_settings: Settings, s3_client: S3Client) -> None:
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MIB})
    store = s3_store(settings)
    bucket = bucket_of(settings)

    writer = store.writer(KEY)
    writer.write(b"x" * (6 * MIB))  # one part uploaded, the rest buffered
    assert pending_uploads(s3_client, bucket) == [f"{S3_PREFIX}/{KEY}"]
    writer.abort()

    assert pending_uploads(s3_client, bucket) == []
    assert store.list() == []


def test_exception_inside_with_aborts(s3_settings: Settings, s3_client: S3Client) -> None:
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MIB})
    store = s3_store(settings)

    with pytest.raises(RuntimeError, match="client went away"), store.writer(KEY) as writer:
        writer.write(b"y" * (5 * MIB))
        raise RuntimeError("client went away")
    with store.writer("small.csv") as small:
        small.write(BODY)  # left without commit: a small object is never put

    assert pending_uploads(s3_client, bucket_of(settings)) == []
    assert store.list() == []


def test_missing_object(s3_settings: Settings) -> None:
    store = s3_store(s3_settings)

    for call in (store.open, store.head, store.checksum):
        with pytest.raises(ObjectNotFoundError, match=r"no object 'nope\.csv'"):
            call("nope.csv")
    with pytest.raises(ObjectNotFoundError), store.local_path("nope.csv"):
        pass
    store.delete("nope.csv")  # idempotent, as S3 itself is
    assert list((s3_settings.data_dir / "staging").iterdir()) == []


def test_local_path_stages_and_cleans_up(s3_settings: Settings) -> None:
    store = s3_store(s3_settings)
    store.put(KEY, [BODY])

    with store.local_path(KEY) as path:
        assert path.parent == s3_settings.data_dir / "staging"
        assert path.suffix == ".csv"
        assert path.read_bytes() == BODY
    assert not path.exists()


def test_other_errors_name_the_key_not_the_credentials(s3_settings: Settings) -> None:
    url = s3_settings.storage_url.replace("s3://", "s3://no-such-bucket-")
    store = s3_store(s3_settings.model_copy(update={"storage_url": url}))

    with pytest.raises(StorageError) as caught:
        store.put(KEY, [BODY])

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert KEY in message and "NoSuchBucket" in message
    assert "testing" not in message and str(s3_settings.s3_endpoint_url) not in message
