"""The one error tree. Each class carries a stable `code` and the `http_status` a service answers
with (inherited unless it says otherwise); services map these to HTTP or dead-letter reasons at
their edge.

SalesflowError                          HTTP 500 unless a class below says otherwise
├── InputError (also ValueError)        the input is wrong; the message says how to fix it (HTTP 400)
│   ├── HeaderError                     missing columns, empty file, unreadable header
│   ├── NoRowsError                     a header but no data rows
│   ├── NotUtf8Error                    bytes that are not UTF-8 (the offset and line are named)
│   ├── UnterminatedQuoteError          a quote that is never closed before the end of the file
│   ├── FieldTooLongError               a field (or an unsplittable line) over the size limit
│   ├── TooManyRejectsError             rejected share of rows above the configured limit
│   ├── AllRowsRejectedError            an upload whose every row would be rejected (with a hint)
│   ├── NothingToPredictError           a prediction file whose every row is dropped (HTTP 422)
│   ├── OverlapError                    mode reject: the upload covers cells already held (HTTP 409)
│   ├── InvalidEventError               a Kafka event that does not parse or lacks its schema version
│   ├── InvalidKeyError                 an object key outside the upload prefix
│   ├── HorizonError                    a forecast horizon outside 1-24 months or a table's periods
│   ├── TooLargeError                   a body above the size limit (HTTP 413)
│   │   └── ExportTooLargeError         a bulk export over its row limit (HTTP 413)
│   ├── UnsupportedMediaError           not a CSV text file (HTTP 415)
│   ├── BodyTimeoutError                the client sent its body too slowly (HTTP 408)
│   └── UntrainableUploadError          training asked for an upload that is unknown, rejected or
│                                       not the bytes named (HTTP 409)
├── UnauthorizedError                   a missing or wrong bearer token (HTTP 401)
├── NotFoundError                       no such upload / job (HTTP 404)
├── StorageError                        the object store failed
│   ├── ObjectNotFoundError             no object at that key (HTTP 404)
│   └── StorageFullError                no space left (ENOSPC/EDQUOT) while writing (HTTP 507)
├── IntegrityError                      a stored object differs from its recorded size/sha256 (HTTP 409)
│   └── ReportMismatchError             a status report whose sha256/size is not the upload's (HTTP 409)
├── ModelError                          training or prediction could not run
│   └── ModelNotFoundError              no such model version / no active model (HTTP 404)
├── UnavailableError                    a dependency is down: retry later (transient; HTTP 503)
│   └── BusyError                       too much work in flight right now (HTTP 503)
└── ConfigurationError                  a setting is unusable (e.g. java missing)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllRowsRejectedError",
    "BodyTimeoutError",
    "BusyError",
    "ConfigurationError",
    "ExportTooLargeError",
    "FieldTooLongError",
    "HeaderError",
    "HorizonError",
    "InputError",
    "IntegrityError",
    "InvalidEventError",
    "InvalidKeyError",
    "ModelError",
    "ModelNotFoundError",
    "NoRowsError",
    "NotFoundError",
    "NotUtf8Error",
    "NothingToPredictError",
    "ObjectNotFoundError",
    "OverlapError",
    "ReportMismatchError",
    "SalesflowError",
    "StorageError",
    "StorageFullError",
    "TooLargeError",
    "TooManyRejectsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaError",
    "UnterminatedQuoteError",
    "UntrainableUploadError",
]


class SalesflowError(Exception):
    """Root of every error salesflow raises on purpose. `code` is a stable machine-readable name;
    `http_status` is what a service answers when the error reaches its edge."""

    code = "salesflow_error"
    http_status = 500


class InputError(SalesflowError, ValueError):
    code = "invalid_input"
    http_status = 400


class HeaderError(InputError):
    code = "bad_header"


class NoRowsError(InputError):
    code = "no_rows"


class NotUtf8Error(InputError):
    code = "not_utf8"


class UnterminatedQuoteError(InputError):
    code = "unterminated_quote"


class FieldTooLongError(InputError):
    code = "field_too_long"


class TooManyRejectsError(InputError):
    code = "too_many_rejects"

    def __init__(self, message: str, *, counts: dict[str, Any] | None = None) -> None:
        """`counts`: what the read found (rows_read, rows_rejected, rejects_by_reason,
        rejects_url), kept with the failed job so it shows the real numbers."""
        super().__init__(message)
        self.counts = dict(counts or {})


class AllRowsRejectedError(InputError):
    code = "all_rows_rejected"


class NothingToPredictError(InputError):
    """Every row of a prediction file was dropped; the message counts each reason with its first
    line numbers."""

    code = "nothing_to_predict"
    http_status = 422


class OverlapError(InputError):
    code = "overlap"
    http_status = 409


class InvalidEventError(InputError):
    code = "malformed_event"


class InvalidKeyError(InputError):
    code = "invalid_key"


class TooLargeError(InputError):
    code = "too_large"
    http_status = 413


class ExportTooLargeError(TooLargeError):
    code = "export_too_large"


class HorizonError(InputError):
    code = "bad_horizon"


class UnsupportedMediaError(InputError):
    code = "unsupported_media_type"
    http_status = 415


class BodyTimeoutError(InputError):
    code = "body_timeout"
    http_status = 408


class UntrainableUploadError(InputError):
    code = "upload_not_trainable"
    http_status = 409


class UnauthorizedError(SalesflowError):
    code = "unauthorized"
    http_status = 401


class NotFoundError(SalesflowError):
    code = "not_found"
    http_status = 404


class StorageError(SalesflowError):
    code = "storage_error"


class ObjectNotFoundError(StorageError):
    code = "object_missing"
    http_status = 404


class StorageFullError(StorageError):
    code = "storage_full"
    http_status = 507


class IntegrityError(SalesflowError):
    code = "checksum_mismatch"
    http_status = 409


class ReportMismatchError(IntegrityError):
    code = "report_mismatch"


class ModelError(SalesflowError):
    code = "model_error"


class ModelNotFoundError(ModelError):
    code = "model_not_found"
    http_status = 404


class UnavailableError(SalesflowError):
    code = "unavailable"
    http_status = 503


class BusyError(UnavailableError):
    code = "busy"


class ConfigurationError(SalesflowError):
    code = "configuration_error"
