"""What never leaves a service: tokens in log lines, host paths in error messages."""

from __future__ import annotations

import pytest

from salesflow.logs import redact
from salesflow.services.http import public_text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '127.0.0.1:5 - "GET /uploads?limit=1&token=abc-DEF_9 HTTP/1.1" 200',
            '127.0.0.1:5 - "GET /uploads?limit=1&token=*** HTTP/1.1" 200',
        ),
        ("/login?access_token=zz", "/login?access_token=***"),
        ("sent Authorization: Bearer s3cr3t.value", "sent Authorization: Bearer ***"),
        ("no secret here: tokens=3", "no secret here: tokens=3"),
    ],
)
def test_tokens_are_redacted_from_log_lines(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("no such file: /srv/data/objects/uploads/a.csv", "no such file: a.csv"),
        ("trained on file:///srv/data/x.csv, rows 3", "trained on x.csv, rows 3"),
        ("read s3://bucket/store/uploads/b.csv failed", "read b.csv failed"),
        ("dates like 2024/01 and a/b stay", "dates like 2024/01 and a/b stay"),
    ],
)
def test_error_messages_lose_host_paths(message: str, expected: str) -> None:
    assert public_text(message) == expected
