"""Faults inside the job server: killed mid-job, frozen after accepting, Spark failing mid-training.

One system for the module. A job server restart costs a JVM start (~15 s), so the tests run in an
order that needs only two: the restart after the kill (case 8) already arms the pause of case 7,
and case 9 restarts it armed with the training failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from salesflow.cli.demo import forecast_request
from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.catalog import load_catalog
from salesflow.sales.contract import upload_key
from salesflow.services.jobs.db import JobDB
from salesflow.services.jobs.runner import JobRunner
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
#: Rows of an upload whose training keeps the job server busy while another job waits.
QUEUE_AHEAD_ROWS = 40_000
#: Job server step that freezes it right after it created a job (case 7).
PAUSE_AFTER_ACCEPT = "jobs.after_accept"
#: Training step where a Spark task fails, after the model was staged, before it is published.
FAIL_BEFORE_PUBLISH = "train.before_publish"
#: The consumer's HTTP timeout in case 7: short, so the frozen job server times it out quickly.
CLIENT_TIMEOUT_S = 2.0

#: The crash point the module's job server was last started with.
_armed: dict[str, str | None] = {"point": None}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A start costs ~15 s (the job server's JVM), so the module's tests share one system."""
    _armed["point"] = None
    with running_system(tmp_path_factory.mktemp("jobserver-faults"), **CHEAP) as running:
        yield running


# --- helpers -----------------------------------------------------------------------------------


def eventually(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (AssertionError naming `what` if never)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def log_lines(path: Path, upload_id: str | None = None) -> list[dict[str, Any]]:
    """A service's JSON log lines, optionally only those about one upload."""
    entries = []
    for raw in path.read_text(errors="replace").splitlines() if path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            entry = json.loads(raw)
            if isinstance(entry, dict) and upload_id in (None, entry.get("upload_id")):
                entries.append(entry)
    return entries


def log_path(system: System, service: str) -> Path:
    return system.settings.data_dir / "logs" / f"{service}.log"


def job_server_pid(system: System) -> int:
    process = system.stack.child("job server").process
    assert process is not None and process.poll() is None, "the job server is not running"
    return process.pid


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, Z...)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def restart_job_server(system: System, crash_point: str | None) -> None:
    system.stack.restart("job server", crash_point=crash_point)
    _armed["point"] = crash_point


def job_server_armed(system: System, crash_point: str | None) -> None:
    """Make sure the job server runs with `crash_point` (restarting it only if it does not)."""
    if _armed["point"] != crash_point:
        restart_job_server(system, crash_point)


def jobs_table(settings: Settings) -> list[dict[str, Any]]:
    """The job table read behind the job server's back (read-only; it may be frozen)."""
    uri = f"file:{settings.data_dir / 'jobs.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT job_id, upload_id, status FROM jobs")]


def staged_models(system: System) -> list[Path]:
    staging = system.settings.warehouse_path / "models" / ".staging"
    return sorted(staging.iterdir()) if staging.is_dir() else []


def versions(system: System) -> list[str]:
    return [v.version for v in ModelRegistry(system.settings.warehouse_path / "models").versions()]


# --- a model published by an attempt that died before recording it ----------------------------


def test_a_model_published_by_an_interrupted_attempt_is_adopted(settings: Settings) -> None:
    """Killed between publishing and recording, a re-queued job records that version instead
    of training the upload a second time (which would give it two versions)."""
    upload_id = "a" * 32
    db = JobDB(settings.data_dir / "jobs.db")
    registry = ModelRegistry(settings.warehouse_path / "models")
    try:
        db.create_train(upload_id, "file:///nowhere.csv", None)
        assert db.claim_next() is not None  # attempt 1 runs, publishes, and the server dies
        with registry.staging() as staged:
            (staged / "pipeline").mkdir()
            meta = {"inputs": [{"upload_id": upload_id}], "metrics": {"model": {"wape": 0.2}}}
            registry.publish(staged, meta, activate=True, reason="attempt 1", actor="test")
        assert [j.status for j in db.recover()] == ["queued"]
        trained: list[object] = []
        runner = JobRunner(
            settings,
            db,
            registry,
            train_fn=lambda *args, **kwargs: trained.append(args),
            session_fn=lambda: None,
        )
        second = db.claim_next()
        assert second is not None and second.attempts == 2
        done = runner.run(second)
    finally:
        db.close()
    assert (done.status, done.model_version) == ("succeeded", "v0001")
    assert done.result["metrics"] == {"model": {"wape": 0.2}}
    assert trained == []
    assert [v.version for v in registry.versions()] == ["v0001"]


# --- the stored file changes while its verified job waits in the queue ------------------------


def test_a_file_changed_while_its_job_waits_fails_with_checksum_mismatch(system: System) -> None:
    """The consumer verified the file and the job server queued its job behind another; the
    stored file is then changed in place. The job verifies the bytes it reads and fails: no model
    from rows that were never uploaded."""
    job_server_armed(system, None)
    before = versions(system)
    first = system.upload(system.sales_file(QUEUE_AHEAD_ROWS, seed=703))["upload_id"]
    eventually(
        lambda: any(
            j["upload_id"] == first and j["status"] == "running"
            for j in jobs_table(system.settings)
        ),
        60,
        "the first job runs",
    )
    upload_id = system.upload(system.sales_file(ROWS, seed=702))["upload_id"]
    eventually(
        lambda: any(j["upload_id"] == upload_id for j in jobs_table(system.settings)),
        60,
        "the second job is queued",
    )
    [waiting] = [j for j in jobs_table(system.settings) if j["upload_id"] == upload_id]
    stored = local_path_of(system.settings.storage_url) / upload_key(upload_id)
    with stored.open("r+b") as handle:  # the same file, one digit changed: not what was uploaded
        handle.seek(-2, os.SEEK_END)
        digit = handle.read(1)
        handle.seek(-2, os.SEEK_END)
        handle.write(b"8" if digit == b"9" else b"9")
    assert waiting["status"] == "queued", "the first job ended too soon to test a waiting one"
    assert [j["status"] for j in jobs_table(system.settings) if j["upload_id"] == first] == [
        "running"
    ]
    final = system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)
    assert final["status"] == "failed" and final["error_code"] == "checksum_mismatch", final
    [job] = system.jobs(upload_id)
    assert job["status"] == "failed" and job["error_code"] == "checksum_mismatch", job
    assert system.wait_terminal(first, timeout=TERMINAL_TIMEOUT_S)["status"] == "trained"
    assert len(versions(system)) == len(before) + 1
    assert not list((system.settings.data_dir / "staging").glob("*")), "the copy was kept"


# --- 8: the job server is killed with a job running --------------------------------------------


def test_job_server_killed_mid_job_requeues_it_and_sweeps_its_half_written_model(
    system: System,
) -> None:
    """Case 8: SIGKILL while a job has a model staged but not published. After the restart the
    job is re-queued (never left running), its staged model is removed, and it trains once."""
    job_server_armed(system, None)
    before = versions(system)  # earlier tests of this module may have published models
    upload_id = system.upload(system.sales_file(ROWS, seed=801))["upload_id"]
    running = eventually(
        lambda: [j for j in system.jobs(upload_id) if j["status"] == "running"],
        TERMINAL_TIMEOUT_S,
        "the train job is running",
    )
    job_id = running[0]["job_id"]
    staged = eventually(
        lambda: staged_models(system), TERMINAL_TIMEOUT_S, "the job stages its model", every=0.02
    )
    pid = job_server_pid(system)
    os.kill(pid, signal.SIGSTOP)  # freeze first, so the check below sees what the kill leaves
    assert staged_models(system) == staged and versions(system) == before
    os.kill(pid, signal.SIGKILL)
    process = system.stack.child("job server").process
    assert process is not None and process.wait(timeout=30) == -signal.SIGKILL
    assert [j["status"] for j in jobs_table(system.settings) if j["job_id"] == job_id] == [
        "running"
    ]

    # Restarted already armed for case 7's pause, which fires only when a NEW job is created:
    # nothing creates one here (the consumer committed this upload's event long ago).
    restart_job_server(system, PAUSE_AFTER_ACCEPT)
    messages = [e["msg"] for e in log_lines(log_path(system, "jobs"))]
    assert f"job {job_id} was left running: now queued" in messages
    removed = [m for m in messages if m.endswith("left by an interrupted job")]
    assert [f"removed models/.staging/{staged[0].name}, left by an interrupted job"] == [
        m for m in removed if ".staging" in m
    ]

    final = system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)
    assert final["status"] == "trained", final
    [job] = system.jobs(upload_id)
    assert (job["job_id"], job["status"], job["attempts"]) == (job_id, "succeeded", 2)
    assert versions(system) == [*before, final["model_version"]]
    check_invariants(system, [upload_id])


# --- 7: the job server accepts, then the client times out --------------------------------------


def test_client_timeout_after_accept_retries_to_the_same_job(system: System) -> None:
    """Case 7: the job server creates the job and freezes before answering; the consumer's call
    times out, it retries, and when the job server resumes the retry gets the same job."""
    job_server_armed(system, PAUSE_AFTER_ACCEPT)
    system.stack.restart("upload consumer", http_timeout_s=CLIENT_TIMEOUT_S)
    pid = job_server_pid(system)
    try:
        upload_id = system.upload(system.sales_file(ROWS, seed=701))["upload_id"]
        eventually(lambda: process_state(pid) == "T", 60, "the job server froze after accepting")
        [accepted] = [j for j in jobs_table(system.settings) if j["upload_id"] == upload_id]
        consumer_log = log_path(system, "consumer")
        timeouts = eventually(
            lambda: [
                e
                for e in log_lines(consumer_log, upload_id)
                if e["msg"].startswith("transient failure (job_server_unavailable)")
                and "timed out" in e["msg"]
            ],
            30,
            "the consumer's call times out",
        )
        assert timeouts
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        final = system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)
        assert final["status"] == "trained", final
        [job] = system.jobs(upload_id)
        assert job["job_id"] == accepted["job_id"] and job["attempts"] == 1
        # The retry that finally got an answer was answered with the job made before the freeze.
        queued = [
            m.group(1)
            for e in log_lines(consumer_log, upload_id)
            if (m := re.fullmatch(r"upload queued as job ([0-9a-f]+)", e["msg"]))
        ]
        assert queued and set(queued) == {accepted["job_id"]}, queued
    finally:
        system.stack.restart("upload consumer")
    check_invariants(system, [upload_id])


# --- 9: Spark fails in the middle of training --------------------------------------------------


def test_spark_failure_mid_training_fails_the_job_and_keeps_the_model(system: System) -> None:
    """Case 9: a Spark task fails after the model was staged: the job fails with the error,
    no version is published, the active model is unchanged, and the job server keeps serving."""
    job_server_armed(system, FAIL_BEFORE_PUBLISH)
    with JobServerClient(system.settings) as client:
        before = client.models()
    upload_id = system.upload(system.sales_file(ROWS, seed=901))["upload_id"]
    final = system.wait_terminal(upload_id, timeout=TERMINAL_TIMEOUT_S)
    assert (final["status"], final["error_code"]) == ("failed", "training_error"), final
    [job] = system.jobs(upload_id)
    assert job["status"] == "failed" and job["error_code"] == "training_error"
    assert "SparkRuntimeException" in job["error"], job["error"]
    assert any("failed: training_error" in line for line in job["log_tail"])
    assert "simulated executor failure (train.before_publish)" in log_path(
        system, "jobs"
    ).read_text(errors="replace")
    with JobServerClient(system.settings) as client:
        after = client.models()
    assert after == before  # no new version, the same active one
    assert staged_models(system) == []  # the staged model went with the failure
    if before["active"]:  # the warm session survived: the active model still predicts
        request = forecast_request(load_catalog(None), date(2023, 1, 1), 1, system.files / "r.csv")
        with JobServerClient(system.settings) as client:
            answer = client.predict_csv(request, accept_json=True)
        assert isinstance(answer, dict) and answer["model_version"] == before["active"]
        assert answer["row_count"] > 0
    assert system.stack.child("job server").alive()
    check_invariants(system, [upload_id])
