"""Client-side flows shared by the CLI and the demo: upload with a progress bar, follow to the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import UnavailableError

__all__ = ["TERMINAL", "follow_upload", "upload_with_progress"]

TERMINAL = frozenset({"trained", "failed", "rejected"})
#: How long `salesflow upload` follows an upload before giving up (training 20k rows takes ~10 s warm).
FOLLOW_TIMEOUT_S = 900.0


def upload_with_progress(
    settings: Settings, path: Path, *, force: bool, console: Console, mode: str | None = None
) -> dict[str, Any]:
    """POST the file to the upload service with a byte progress bar; the service's record."""
    with (
        UploadClient(settings) as client,
        Progress(
            "[bold]uploading",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("upload", total=path.stat().st_size)
        record = client.upload(
            path,
            force=force,
            progress=lambda sent: progress.update(task, completed=sent),
            mode=mode,
        )
    note = " (same content as an earlier upload)" if record.get("duplicate") else ""
    console.print(f"stored as upload {record['upload_id']}{note}")
    return record


def follow_upload(
    settings: Settings, upload_id: str, *, console: Console, timeout: float = FOLLOW_TIMEOUT_S
) -> dict[str, Any]:
    """Poll the upload until it reaches a terminal status, showing each change."""
    deadline = time.monotonic() + timeout
    last = ""
    with UploadClient(settings) as client, console.status("waiting for the consumer") as status:
        while True:
            record = client.get(upload_id)
            if record["status"] != last:
                last = record["status"]
                status.update(
                    f"upload {last}"
                    + (f" (job {record['job_id']})" if record.get("job_id") else "")
                )
                console.print(f"  {time.strftime('%H:%M:%S')} {last}")
            if last in TERMINAL:
                return record
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"upload {upload_id} still {last} after {timeout:.0f} s; "
                    "check `salesflow up` logs in the data folder"
                )
            time.sleep(0.5)
