"""What the upload service's process imports: its memory budget (<= 150 MB peak, measured by
bench/bench_upload.py) leaves no room for modules it does not use."""

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
