"""The one error tree. Services map these to HTTP codes or dead-letter reasons at their edge.

    SalesflowError
    ├── InputError (also ValueError)        the user's input is wrong; the message says how to fix it
    │   ├── HeaderError                     missing columns, empty file, unreadable header
    │   ├── TooManyRejectsError             rejected share of rows above the configured limit
    │   ├── InvalidEventError               a Kafka event that does not parse or lacks its schema version
    │   └── InvalidKeyError                 an object key outside the upload prefix
    ├── StorageError                        the object store failed
    │   └── ObjectNotFoundError
    ├── IntegrityError                      a stored object does not match its recorded size/sha256
    ├── ModelError                          training or prediction could not run
    │   └── ModelNotFoundError              no such model version / no active model
    ├── UnavailableError                    a dependency is down: retry later (transient)
    └── ConfigurationError                  a setting is unusable (e.g. java missing)
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "HeaderError",
    "InputError",
    "IntegrityError",
    "InvalidEventError",
    "InvalidKeyError",
    "ModelError",
    "ModelNotFoundError",
    "ObjectNotFoundError",
    "SalesflowError",
    "StorageError",
    "TooManyRejectsError",
    "UnavailableError",
]


class SalesflowError(Exception):
    """Root of every error salesflow raises on purpose. `code` is a stable machine-readable name."""

    code = "salesflow_error"


class InputError(SalesflowError, ValueError):
    code = "invalid_input"


class HeaderError(InputError):
    code = "bad_header"


class TooManyRejectsError(InputError):
    code = "too_many_rejects"


class InvalidEventError(InputError):
    code = "malformed_event"


class InvalidKeyError(InputError):
    code = "invalid_key"


class StorageError(SalesflowError):
    code = "storage_error"


class ObjectNotFoundError(StorageError):
    code = "object_missing"


class IntegrityError(SalesflowError):
    code = "checksum_mismatch"


class ModelError(SalesflowError):
    code = "model_error"


class ModelNotFoundError(ModelError):
    code = "model_not_found"


class UnavailableError(SalesflowError):
    code = "unavailable"


class ConfigurationError(SalesflowError):
    code = "configuration_error"
