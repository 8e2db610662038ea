"""Structured logging: one JSON object per line, with the upload id / job id of the work in hand.

`bind(upload_id=..., job_id=...)` sets context for the current thread or task; every log line emitted
inside carries it, so `grep <upload id>` over all services' logs shows that upload's whole story.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["bind", "configure_logging", "current_context", "redact"]

#: A bearer token in a header, or a `token=` / `access_token=` value in a query string or form.
_SECRET = re.compile(r"(?i)(bearer\s+|\btoken=|\baccess_token=)[^\s&\"',;]+")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("salesflow_log_context")


def current_context() -> dict[str, str]:
    """The ids bound to the current thread or task."""
    return _context.get({})


@contextlib.contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Attach ids (upload_id, job_id, ...) to every log line inside the block."""
    merged = {**current_context(), **{k: v for k, v in ids.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def redact(text: str) -> str:
    """`text` with every bearer token and `token=` value replaced by `***`."""
    return _SECRET.sub(r"\1***", text)


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),  # access logs carry query strings
            **current_context(),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            # Tracebacks stay in the log file for operators; they never reach a response.
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stderr for a service process; idempotent."""
    root = logging.getLogger()
    root.handlers[:] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
