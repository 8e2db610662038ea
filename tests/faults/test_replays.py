"""Invariant 2 as restated: one model per upload per training request. A replay (`salesflow
retrain`) is a second request, recorded as a replay, and the invariant checker accepts exactly
its one extra job and version (real processes, the package's shared system)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.conftest import made_whole
from tests.fixtures.system import System, check_invariants

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = 1_500


@pytest.fixture
def system(fault_system: System) -> System:
    return made_whole(fault_system)


def test_a_replay_is_recorded_as_one_and_adds_one_version(system: System) -> None:
    upload_id = system.upload(system.sales_file(ROWS, seed=2401))["upload_id"]
    first = system.wait_terminal(upload_id)
    assert first["status"] == "trained", first
    retrain = subprocess.run(
        [sys.executable, "-m", "salesflow.cli", "retrain", upload_id],
        env=system.stack.env(),
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert retrain.returncode == 0, retrain.stderr.decode()[-2000:]
    jobs = sorted(system.jobs(upload_id), key=lambda j: j["created_at"])
    assert [j["replay"] for j in jobs] == [False, True], jobs
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    assert jobs[0]["model_version"] != jobs[1]["model_version"]
    check_invariants(system, [upload_id])
