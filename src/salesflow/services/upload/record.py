"""What the upload service keeps about one upload: the file just stored, then its record.

`NewUpload` is what streaming knows once the file is committed; `UploadRecord` is the row the
database holds (status and outcome added), and `to_dict` is the JSON the API answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["NewUpload", "UploadRecord"]


@dataclass(frozen=True)
class NewUpload:
    """A file committed to storage, not yet recorded: what its row and its event are made of."""

    upload_id: str
    key: str
    url: str
    size: int
    sha256: str
    filename: str
    created_at: str
    preview: dict[str, Any] | None = None
    mode: str | None = None  # the history mode asked for (None: the job server's setting)


@dataclass(frozen=True)
class UploadRecord:
    """One upload as stored: the file, its status, and the job's outcome once reported.

    The field order is the order of the keys in the API's answers.
    """

    upload_id: str
    key: str
    url: str
    size: int
    sha256: str
    filename: str
    status: str
    job_id: str | None
    model_version: str | None
    metrics: dict[str, Any] | None
    error_code: str | None
    error: str | None
    preview: dict[str, Any] | None
    created_at: str
    updated_at: str
    mode: str | None = None  # the history mode asked for (None: the job server's setting)

    def to_dict(self) -> dict[str, Any]:
        """The record as the API answers it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UploadRecord:
        """A record from an API answer (keys the record does not hold, like `duplicate`, ignored)."""
        optional = {"mode"}  # answers of a service from before it existed lack it
        values: dict[str, Any] = {
            f.name: data.get(f.name) if f.name in optional else data[f.name] for f in fields(cls)
        }
        return cls(**values)
