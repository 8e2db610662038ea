"""Fault points are inert unless armed, and only named points exist."""

from __future__ import annotations

import subprocess
import sys

import pytest

from salesflow import faults
from salesflow.config import Settings


def test_an_unarmed_point_does_nothing(settings: Settings) -> None:
    for point in faults.POINTS:
        faults.reached(settings, point)  # returns: nothing is armed


def test_an_unknown_point_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"unknown fault point 'consumer\.nowhere'"):
        faults.reached(settings, "consumer.nowhere")


def test_an_armed_exit_point_ends_the_process_with_its_code() -> None:
    code = (
        "from salesflow import faults\n"
        "from salesflow.config import Settings\n"
        "faults.reached(Settings(crash_point='consumer.after_verify'), 'consumer.after_train')\n"
        "print('other point passed', flush=True)\n"
        "faults.reached(Settings(crash_point='consumer.after_verify'), 'consumer.after_verify')\n"
        "print('SURVIVED')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == faults.EXIT_CODE, done.stderr
    assert "other point passed" in done.stdout and "SURVIVED" not in done.stdout
