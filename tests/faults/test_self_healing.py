"""The system heals itself in seconds (real processes): a dead service is restarted by the
supervisor, an upload killed mid-stream leaves no temp file, a job status lost while the upload
service was down arrives when it returns, and a broker that lost its log gets the events again.

The system (file:// store, cheap models) is shared with the other fault modules of the package
(tests/faults/conftest.py); every test leaves it whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from salesflow.auth import auth_headers
from salesflow.cli.supervisor import STATE_FILE
from salesflow.services.upload.db import utc_now
from salesflow.storage import local_path_of
from tests.faults.conftest import kill_broker, made_whole, outbox_rows, wait_until
from tests.fixtures.system import System, check_invariants

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

#: Rows per trained file (a few seconds with the cheap models).
ROWS = 1_500
#: What the issue asks: healed within 30 s of the part's return.
HEAL_S = 30.0
HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"


@pytest.fixture
def system(fault_system: System) -> System:
    return made_whole(fault_system)


@contextlib.contextmanager
def supervising(system: System) -> Iterator[list[str]]:
    """What `salesflow up` does each second, for the block: heal the stack; what it said."""
    said: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.5):
            system.stack.heal(say=said.append)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield said
    finally:
        stop.set()
        thread.join(10)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


def test_a_dead_service_is_restarted_and_status_shows_it(system: System) -> None:
    settings = system.settings
    child = system.stack.child("upload service")
    assert child.process is not None
    with supervising(system) as said:
        child.process.send_signal(signal.SIGKILL)
        wait_until(lambda: child.restarts == 1, HEAL_S, "the supervisor restarted it")
        wait_until(lambda: _ready(settings.upload_service_url), HEAL_S, "it is ready again")
    assert any("upload service died (exit code -9)" in m for m in said), said
    assert any("upload service restarted (restart 1)" in m for m in said), said
    log = (settings.data_dir / "logs" / "supervisor.log").read_text()
    assert "upload service restarted (restart 1)" in log
    state = json.loads((settings.data_dir / STATE_FILE).read_text())
    assert state["children"]["upload service"]["restarts"] == 1
    status = subprocess.run(
        [sys.executable, "-m", "salesflow.cli", "status", "--json"],
        env=system.stack.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    answer = json.loads(status.stdout)
    assert answer["restarts"]["upload service"] == 1, answer.get("restarts")


def test_temp_files_of_a_killed_upload_are_swept_at_start(system: System) -> None:
    settings = system.settings
    uploads = local_path_of(settings.storage_url) / "uploads"
    token = auth_headers(settings)["Authorization"]
    part = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + HEADER
    )
    line = b"1,Widget,2.50,7,Main St,3,2024-01-01\n"
    port = int(settings.upload_service_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST /uploads HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
            + part
        )
        for _ in range(8):  # 8 MiB of rows: the writer has a temp file by then
            sock.sendall(line * (1024 * 1024 // len(line)))
        wait_until(lambda: any(uploads.glob(".*.tmp-*")), 10, "the upload has a temp file")
        process = system.stack.child("upload service").process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert list(uploads.glob(".*.tmp-*")), "the killed upload's temp file is there"
    system.stack.restart("upload service")
    assert not list(uploads.glob(".*.tmp-*"))
    log = (settings.data_dir / "logs" / "upload.log").read_text()
    assert "left by an upload that never finished" in log


def test_a_job_status_reaches_the_upload_service_after_it_returns(system: System) -> None:
    """The job finishes while the upload service is down (its reporter gives up after ~4 s); the
    final status is on the upload within 30 s of the service's return."""
    settings = system.settings
    record = system.upload(system.sales_file(ROWS, seed=2301))
    upload_id = record["upload_id"]
    wait_until(lambda: bool(system.jobs(upload_id)), 60, "the job exists")
    service = system.stack.child("upload service")
    service.stop()
    try:
        wait_until(
            lambda: system.jobs(upload_id)[0]["status"] in ("succeeded", "failed"),
            240,
            "the job finished",
        )
        time.sleep(5)  # the job server's reporter has given up by now
    finally:
        system.stack.restart("upload service")
    returned = time.monotonic()
    final = system.wait_terminal(upload_id, timeout=HEAL_S)
    assert time.monotonic() - returned < HEAL_S
    assert final["status"] == "trained", final
    assert final["model_version"] == system.jobs(upload_id)[0]["model_version"]
    with httpx.Client(headers=auth_headers(settings)) as client:  # the adoption was logged
        assert client.get(f"{settings.upload_service_url}/uploads/{upload_id}").status_code == 200
    check_invariants(system, [upload_id])


def test_events_lost_by_a_broker_restart_are_republished_within_30_s(system: System) -> None:
    """The broker is killed with an event unconsumed and comes back empty: the relay notices the
    topic's end going back and re-announces the upload at once (not after reconcile_after_s,
    which stays at its 600 s default here); it trains once."""
    system.stack.child("upload consumer").stop()
    try:
        upload_id = system.upload(system.sales_file(ROWS, seed=2302))["upload_id"]
        wait_until(
            lambda: all(r["published_at"] for r in outbox_rows(system, upload_id)),
            30,
            "the event was published",
        )
        time.sleep(6)  # the relay has seen the topic's end with the event on it
        kill_broker(system)
        killed_at = utc_now()
        system.stack.restart("broker")
        returned = time.monotonic()
        wait_until(
            lambda: any(
                (r["published_at"] or "") > killed_at for r in outbox_rows(system, upload_id)
            ),
            HEAL_S,
            "the upload's event was re-published on the new broker",
        )
        assert time.monotonic() - returned < HEAL_S
    finally:
        system.stack.restart("upload consumer")
    final = system.wait_terminal(upload_id)
    assert final["status"] == "trained", final
    assert len(system.jobs(upload_id)) == 1
    check_invariants(system, [upload_id])
