"""Clean-up after a job server that died mid-job: the half-written folders its jobs left behind.

Every write a job makes goes to a temporary name first and is renamed into place when complete
(a verified copy of an upload in `<data_dir>/staging/`, a model in `models/.staging/<random>/`, a curated partition in `.tmp-<random>/`, a CSV in
`.<name>.tmp-<random>/`), so a killed job leaves only such names, never a partial version,
partition or file. Readers skip them, but they hold disk and look like partial output, so the job
server removes them when it starts after recovering interrupted jobs. Only then: with one job server
per warehouse (docs/scaling.md), nothing else can be writing them at that moment.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from salesflow.config import Settings
from salesflow.spark.read import STAGING_DIR

__all__ = ["leftovers", "sweep_leftovers"]

log = logging.getLogger(__name__)

_STAGING = ".staging"


def _is_leftover(name: str, parent: str) -> bool:
    return parent == _STAGING or (name.startswith(".") and ".tmp" in name)


def leftovers(root: Path) -> list[Path]:
    """Temporary files and folders of unfinished writes under `root` (not looking inside them)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        parent = os.path.basename(folder)
        for name in files:
            if _is_leftover(name, parent):
                found.append(Path(folder, name))
        kept = []
        for name in dirs:
            if _is_leftover(name, parent):
                found.append(Path(folder, name))
            else:
                kept.append(name)
        dirs[:] = kept  # do not walk into a leftover: it goes as a whole
    return sorted(found)


def sweep_leftovers(settings: Settings) -> list[Path]:
    """Remove what interrupted jobs left in the (local) warehouse and the prediction outputs."""
    roots = [settings.data_dir / "predict-outputs"]
    if settings.warehouse_url.startswith("file:"):
        roots.append(settings.warehouse_path)
    removed = []
    staging = settings.data_dir / STAGING_DIR  # verified copies of uploads: every one is a leftover
    if staging.is_dir():
        for path in sorted(staging.iterdir()):
            path.unlink(missing_ok=True)
            log.warning("removed %s, a copy staged by an interrupted job", path.name)
            removed.append(path)
    for root in roots:
        for path in leftovers(root):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            log.warning("removed %s, left by an interrupted job", path.relative_to(root))
            removed.append(path)
    return removed
