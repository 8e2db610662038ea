"""Expected events are not ERROR lines: librdkafka's "Connection refused" while the broker starts
is kept at debug level, with one friendly line instead."""

from __future__ import annotations

import logging

import pytest

from salesflow.kafka.clients import rdkafka_log

REFUSED = (
    "FAIL [rdkafka#producer-1] [thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: "
    "Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)"
)


def test_connection_refused_is_one_friendly_line_not_errors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (quiet,) = [f for f in rdkafka_log.filters if type(f).__name__ == "_ExpectedRefusals"]
    monkeypatch.setattr(quiet, "_noted", -1e9)  # as in a new process
    # Set on both loggers: `salesflow status` turns librdkafka's off for its own run.
    caplog.set_level(logging.INFO, logger=rdkafka_log.name)
    caplog.set_level(logging.INFO, logger="salesflow.kafka.clients")
    for _ in range(5):
        rdkafka_log.error(REFUSED)
    rdkafka_log.error("FAIL [rdkafka#producer-1]: SASL authentication failed")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["FAIL [rdkafka#producer-1]: SASL authentication failed"]  # others stay
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert notes == ["the Kafka broker is not answering yet; retrying (details at debug level)"]


def test_with_debug_on_the_refusals_are_kept_at_debug_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=rdkafka_log.name)
    rdkafka_log.error(REFUSED)
    (kept,) = [r for r in caplog.records if r.name == rdkafka_log.name]
    assert kept.levelno == logging.DEBUG and kept.levelname == "DEBUG"
