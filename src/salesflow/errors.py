"""The one error tree. Services map these to HTTP codes or dead-letter reasons at their edge.

SalesflowError
├── InputError (also ValueError)        the user's input is wrong; the message says how to fix it
│   ├── HeaderError                     missing columns, empty file, unreadable header
│   ├── NoRowsError                     a header but no data rows
│   ├── NotUtf8Error                    bytes that are not UTF-8 (the offset and line are named)
│   ├── UnterminatedQuoteError          a quote that is never closed before the end of the file
│   ├── FieldTooLongError               a field (or an unsplittable line) over the size limit
│   ├── TooManyRejectsError             rejected share of rows above the configured limit
│   ├── InvalidEventError               a Kafka event that does not parse or lacks its schema version
│   ├── InvalidKeyError                 an object key outside the upload prefix
│   ├── TooLargeError                   a body above the size limit (HTTP 413)
│   ├── UnsupportedMediaError           not a CSV text file (HTTP 415)
│   └── BodyTimeoutError                the client sent its body too slowly (HTTP 408)
├── NotFoundError                       no such upload / job (HTTP 404)
├── StorageError                        the object store failed
│   ├── ObjectNotFoundError
│   └── StorageFullError                no space left (ENOSPC/EDQUOT) while writing
├── IntegrityError                      a stored object does not match its recorded size/sha256
│   └── ReportMismatchError             a status report whose sha256/size is not the upload's (HTTP 409)
├── ModelError                          training or prediction could not run
│   └── ModelNotFoundError              no such model version / no active model
├── UnavailableError                    a dependency is down: retry later (transient)
│   └── BusyError                       too much work in flight right now (HTTP 503)
└── ConfigurationError                  a setting is unusable (e.g. java missing)
"""

from __future__ import annotations

__all__ = [
    "BodyTimeoutError",
    "BusyError",
    "ConfigurationError",
    "FieldTooLongError",
    "HeaderError",
    "InputError",
    "IntegrityError",
    "InvalidEventError",
    "InvalidKeyError",
    "ModelError",
    "ModelNotFoundError",
    "NoRowsError",
    "NotFoundError",
    "NotUtf8Error",
    "ObjectNotFoundError",
    "ReportMismatchError",
    "SalesflowError",
    "StorageError",
    "StorageFullError",
    "TooLargeError",
    "TooManyRejectsError",
    "UnavailableError",
    "UnsupportedMediaError",
    "UnterminatedQuoteError",
]


class SalesflowError(Exception):
    """Root of every error salesflow raises on purpose. `code` is a stable machine-readable name."""

    code = "salesflow_error"


class InputError(SalesflowError, ValueError):
    code = "invalid_input"


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


class InvalidEventError(InputError):
    code = "malformed_event"


class InvalidKeyError(InputError):
    code = "invalid_key"


class TooLargeError(InputError):
    code = "too_large"


class UnsupportedMediaError(InputError):
    code = "unsupported_media_type"


class BodyTimeoutError(InputError):
    code = "body_timeout"


class NotFoundError(SalesflowError):
    code = "not_found"


class StorageError(SalesflowError):
    code = "storage_error"


class ObjectNotFoundError(StorageError):
    code = "object_missing"


class StorageFullError(StorageError):
    code = "storage_full"


class IntegrityError(SalesflowError):
    code = "checksum_mismatch"


class ReportMismatchError(IntegrityError):
    code = "report_mismatch"


class ModelError(SalesflowError):
    code = "model_error"


class ModelNotFoundError(ModelError):
    code = "model_not_found"


class UnavailableError(SalesflowError):
    code = "unavailable"


class BusyError(UnavailableError):
    code = "busy"


class ConfigurationError(SalesflowError):
    code = "configuration_error"
