"""Which uploads may train: only those the upload service reports, not rejected, with its sha256.

The job server asks the upload service (over HTTP, the only way services reach each other) before it
creates a training job, so an id the upload service never issued, a rejected upload, or a sha256
that is not the recorded one is refused with its reason; an accepted job carries the recorded
sha256, which training verifies on the bytes it reads (spark/read.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import NotFoundError, UntrainableUploadError

__all__ = ["UploadAdmission", "UploadLookup"]


class UploadLookup(Protocol):
    """The part of the upload service client the admission uses."""

    def get(self, upload_id: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class UploadAdmission:
    """Decides whether an upload may train; `lookup` None admits every upload (the check is off)."""

    def __init__(self, lookup: UploadLookup | None) -> None:
        self.lookup = lookup

    @classmethod
    def for_settings(cls, settings: Settings) -> UploadAdmission:
        """Asks the configured upload service, unless settings.train_requires_upload_record is off."""
        return cls(UploadClient(settings) if settings.train_requires_upload_record else None)

    def close(self) -> None:
        if self.lookup is not None:
            self.lookup.close()

    def sha256_to_train(self, upload_id: str, sha256: str | None) -> str | None:
        """The sha256 the job must find in the file: the upload service's record of it.

        Raises UntrainableUploadError (409) with the reason, or UnavailableError (503) when the
        upload service does not answer (the consumer retries).
        """
        if self.lookup is None:
            return sha256
        try:
            record = self.lookup.get(upload_id)
        except NotFoundError:
            raise UntrainableUploadError(
                f"upload {upload_id} is unknown to the upload service; upload the file first"
            ) from None
        if record.get("status") == "rejected":
            raise UntrainableUploadError(
                f"upload {upload_id} was rejected ({record.get('error_code')}): "
                f"{record.get('error')}; upload a corrected file instead"
            )
        recorded = record.get("sha256")
        if sha256 is not None and sha256 != recorded:
            raise UntrainableUploadError(
                f"sha256 {sha256} is not upload {upload_id}'s ({recorded}); leave it out or send "
                "the recorded one"
            )
        return str(recorded) if recorded else sha256
