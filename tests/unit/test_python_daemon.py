"""The Python worker daemon's preload: nothing an import prints may reach stdout (the JVM reads
the daemon's port from it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_preload_imports_the_statistical_stack_and_keeps_stdout_clean() -> None:
    script = textwrap.dedent(
        """
        import sys
        from salesflow.spark import python_daemon
        python_daemon.PRELOADED = ("json", "salesflow_no_such_module", "statsforecast.models")
        python_daemon.preload()
        assert "statsforecast.models" in sys.modules and "json" in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "salesflow_no_such_module not preloaded" in done.stderr
