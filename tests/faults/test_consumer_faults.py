"""Consumer faults: crashes mid-event, job server down, tampered objects, a rebalance.

One system for the module (its tests leave the stack whole again), with 3 partitions so that a
second consumer can take some of them. Each test ends with `check_invariants` over its uploads.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from salesflow import kafka
from salesflow.faults import EXIT_CODE
from salesflow.sales.contract import upload_key
from salesflow.storage import local_path_of
from tests.faults.conftest import CHEAP
from tests.fixtures.system import System, check_invariants, running_system

#: Per-test limit. A test trains one to four small models: a minute on an idle 2-core machine,
#: but each training can take minutes when the machine is shared with other Spark work.
TEST_TIMEOUT_S = 600
#: How long an upload may take to reach its terminal state (the job may queue behind another).
TERMINAL_TIMEOUT_S = 480.0

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]

#: Rows per upload: enough to train on, small enough that a 3-tree model fits in a few seconds.
ROWS = 1_500


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A start costs ~15 s (the job server's JVM), so the module's tests share one system."""
    root = tmp_path_factory.mktemp("consumer-faults")
    with running_system(root, **CHEAP, kafka_topic_partitions=3) as running:
        yield running


# --- helpers -----------------------------------------------------------------------------------


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy (AssertionError naming `what` if never)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def log_lines(path: Path, upload_id: str | None = None) -> list[dict[str, Any]]:
    """A service's JSON log lines, optionally only those about one upload."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a JVM or library line, not ours
        if isinstance(entry, dict) and (upload_id is None or entry.get("upload_id") == upload_id):
            lines.append(entry)
    return lines


def consumer_log(system: System) -> Path:
    return system.settings.data_dir / "logs" / "consumer.log"


def queued_job_ids(path: Path, upload_id: str) -> list[str]:
    """Job ids from the consumer's "upload queued as job <id>" lines: one per handled delivery."""
    found = []
    for entry in log_lines(path, upload_id):
        match = re.fullmatch(r"upload queued as job ([0-9a-f]+)", entry["msg"])
        if match:
            found.append(match.group(1))
    return found


def lag(system: System) -> int | None:
    """Upload events the consumer group has not committed."""
    return kafka.consumer_lag(system.settings)


def wait_exit(process: subprocess.Popen[bytes] | None, timeout: float) -> int:
    assert process is not None
    return process.wait(timeout=timeout)


def read_letter(system: System, upload_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The dead letter keyed `upload_id`, read from the start with a fresh group."""
    consumer = Consumer(
        {
            "bootstrap.servers": system.settings.kafka_bootstrap_servers,
            "group.id": f"faults-reader-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([system.settings.kafka_dlq_topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == upload_id.encode():
                letter: dict[str, Any] = json.loads(msg.value())
                return letter
        raise AssertionError(f"no dead letter for {upload_id} within {timeout:.0f} s")
    finally:
        consumer.close()


def status_of(system: System, upload_id: str) -> str:
    return str(next(u for u in system.uploads() if u["upload_id"] == upload_id)["status"])


def object_path(system: System, upload_id: str) -> Path:
    return local_path_of(system.settings.storage_url) / upload_key(upload_id)


# --- 4, 5: the consumer dies in the middle of an event -----------------------------------------


def test_killed_after_train_before_commit_is_redelivered_to_the_same_job(system: System) -> None:
    """Case 4: the job server accepted, the consumer died before committing: one job, reused."""
    consumer = system.stack.restart("upload consumer", crash_point="consumer.after_train")
    upload_id = system.upload(system.sales_file(ROWS, seed=401))["upload_id"]
    assert wait_exit(consumer.process, timeout=90) == EXIT_CODE
    accepted = system.jobs(upload_id)
    assert len(accepted) == 1, accepted  # the job server has the job...
    assert lag(system) == 1  # ...and the event is not committed

    system.stack.restart("upload consumer")
    assert system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)["status"] == "trained"
    eventually(lambda: lag(system) == 0, 60, "the redelivered event is committed")
    # Handled again after the crash (redelivered), and answered with the same job each time.
    handled = queued_job_ids(consumer_log(system), upload_id)
    assert len(handled) >= 2 and set(handled) == {accepted[0]["job_id"]}, handled
    assert [j["job_id"] for j in system.jobs(upload_id)] == [accepted[0]["job_id"]]
    check_invariants(system, [upload_id])


def test_killed_after_verify_before_the_call_trains_once(system: System) -> None:
    """Case 5: the consumer died after verifying, before asking for training: one job later."""
    consumer = system.stack.restart("upload consumer", crash_point="consumer.after_verify")
    upload_id = system.upload(system.sales_file(ROWS, seed=501))["upload_id"]
    assert wait_exit(consumer.process, timeout=90) == EXIT_CODE
    assert system.jobs(upload_id) == []
    assert lag(system) == 1

    system.stack.restart("upload consumer")
    assert system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)["status"] == "trained"
    eventually(lambda: lag(system) == 0, 60, "the redelivered event is committed")
    jobs = system.jobs(upload_id)
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded", jobs
    assert set(queued_job_ids(consumer_log(system), upload_id)) == {jobs[0]["job_id"]}
    check_invariants(system, [upload_id])


# --- 6: the job server is down -----------------------------------------------------------------

#: The give-up limit for the first half of case 6: a few back-offs (0.5 + 1 + 2 s), not 15 minutes.
GIVE_UP_S = 4.0


def retry_delays(path: Path, upload_id: str) -> list[float]:
    """The back-off delays the consumer logged for one upload, in order."""
    delays = []
    for entry in log_lines(path, upload_id):
        match = re.search(r"retrying in ([0-9.]+) s", entry["msg"])
        if match:
            delays.append(float(match.group(1)))
    return delays


def runs(values: list[float], size: int) -> list[list[float]]:
    """Every run of `size` consecutive values."""
    return [values[i : i + size] for i in range(len(values) - size + 1)]


def test_job_server_down_backs_off_without_commit_then_gives_up(system: System) -> None:
    """Case 6: while the job server is down nothing is committed; after the give-up it is a
    dead letter (`job_server_unavailable`); when the job server returns, the held event trains."""
    system.stack.child("job server").stop()
    try:
        system.stack.restart("upload consumer", consumer_give_up_s=GIVE_UP_S)
        given_up = system.upload(system.sales_file(ROWS, seed=601))["upload_id"]
        rejected = system.wait_terminal(given_up, timeout=60)
        assert rejected["status"] == "rejected", rejected
        assert rejected["error_code"] == "job_server_unavailable", rejected
        assert "gave up" in rejected["error"]
        letter = read_letter(system, given_up)
        assert letter["reason"] == "job_server_unavailable"
        assert json.loads(letter["event"])["upload_id"] == given_up

        system.stack.restart("upload consumer")  # the default give-up (15 min)
        held = system.upload(system.sales_file(ROWS, seed=602))["upload_id"]
        # Capped exponential back-off: 0.5, 1, 2, 2 s (consumer_backoff_max_s is 2 in the harness).
        cap = system.settings.consumer_backoff_max_s
        expected = [0.5, 1.0, min(2.0, cap), min(4.0, cap)]
        eventually(
            lambda: expected in runs(retry_delays(consumer_log(system), held), len(expected)),
            60,
            f"back-offs of {expected} s while the job server is down",
        )
        assert lag(system) == 1  # held, not committed
        assert status_of(system, held) == "stored"  # not queued: the job server never answered
    finally:
        system.stack.restart("job server")
    assert system.wait_terminal(held, timeout=TERMINAL_TIMEOUT_S)["status"] == "trained"
    eventually(lambda: lag(system) == 0, 60, "the held event is committed")
    assert len(system.jobs(held)) == 1
    assert system.jobs(given_up) == []  # a dead letter never reaches the job server
    check_invariants(system, [given_up, held])


# --- 10: the object changed before verification ------------------------------------------------


def test_object_deleted_or_changed_before_verification_is_dead_lettered(system: System) -> None:
    """Case 10: a missing object and a changed one (same size) are rejected with their reason."""
    system.stack.child("upload consumer").stop()  # hold the hand-off
    try:
        deleted = system.upload(system.sales_file(ROWS, seed=1001))["upload_id"]
        changed = system.upload(system.sales_file(ROWS, seed=1002))["upload_id"]
        object_path(system, deleted).unlink()
        target = object_path(system, changed)
        body = bytearray(target.read_bytes())
        last_digit = max(i for i, b in enumerate(body) if chr(b).isdigit())
        body[last_digit] = ord("1") if body[last_digit] != ord("1") else ord("2")
        target.write_bytes(bytes(body))  # same size, different sha256
    finally:
        system.stack.restart("upload consumer")
    for upload_id, reason in ((deleted, "object_missing"), (changed, "checksum_mismatch")):
        final = system.wait_terminal(upload_id, timeout=60)
        assert (final["status"], final["error_code"]) == ("rejected", reason), final
        assert read_letter(system, upload_id)["reason"] == reason
        assert system.jobs(upload_id) == []
    eventually(lambda: lag(system) == 0, 30, "both dead-lettered events are committed")
    check_invariants(system, [deleted, changed])


# --- 13: a second consumer joins, the first is killed ------------------------------------------

#: Uploads in the rebalance test, and after which of them the first consumer is killed.
STREAM = 4
KILL_AFTER = 1


def assigned(path: Path) -> list[str]:
    """The partition lists a consumer logged on each assignment, in order."""
    return [
        e["msg"].removeprefix("assigned ")
        for e in log_lines(path)
        if e["msg"].startswith("assigned ")
    ]


def test_second_consumer_joins_and_first_is_killed_mid_stream(system: System) -> None:
    """Case 13: with two consumers sharing 3 partitions, SIGKILL one between uploads: every
    upload trains exactly once (the survivor takes the dead one's partitions from their commits)."""
    log_path = system.settings.data_dir / "logs" / "consumer-2.log"
    first = system.stack.child("upload consumer")
    with log_path.open("ab") as out:
        second = subprocess.Popen(  # argument list, no shell
            [sys.executable, "-m", "salesflow.cli", "serve", "consumer"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=system.stack.env(),
            start_new_session=True,
        )
    try:
        # The group has split: the newcomer holds some partitions, not all three.
        eventually(
            lambda: any(a != "nothing" and a.count("[") < 3 for a in assigned(log_path)),
            60,
            "the second consumer gets a share of the partitions",
        )
        ids = []
        for n in range(STREAM):
            ids.append(system.upload(system.sales_file(ROWS, seed=1301 + n))["upload_id"])
            if n == KILL_AFTER:
                assert first.process is not None
                first.process.send_signal(signal.SIGKILL)
        for upload_id in ids:
            assert (
                system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)["status"] == "trained"
            )
        eventually(lambda: lag(system) == 0, 60, "every event is committed")
        # The survivor ended up with all three partitions.
        assert assigned(log_path)[-1].count("[") == 3, assigned(log_path)
        for upload_id in ids:
            assert len(system.jobs(upload_id)) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait(timeout=30)
        system.stack.restart("upload consumer")
    check_invariants(system, ids)
