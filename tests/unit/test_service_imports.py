"""What the services' processes import: the upload service's memory budget (<= 150 MB peak, measured
by bench/bench_upload.py) leaves no room for modules it does not use; the dashboard is a window on
the other services' APIs, not on their disks."""

from __future__ import annotations

import subprocess
import sys


def test_the_upload_service_imports_no_numpy() -> None:
    """numpy alone is ~20 MB of RSS; the preview's duplicate count is pure Python for that reason."""
    code = (
        "import sys, salesflow.cli.app, salesflow.services.upload.app\n"
        "print(sorted(m for m in ('numpy', 'pyspark', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_dashboard_and_the_clients_load_no_registry_serving_or_spark() -> None:
    """The dashboard reads models and history through the job server's API, never from its disk."""
    code = (
        "import sys, salesflow.services.dashboard.app, salesflow.clients.status\n"
        "import salesflow.clients.jobs, salesflow.clients.upload, salesflow.clients.followup\n"
        "core = ('salesflow.registry', 'salesflow.serving', 'salesflow.spark', 'pyspark', 'pyarrow')\n"
        "print(sorted(m for m in sys.modules if m.startswith(core)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
