"""Private files: what a salesflow process writes is its operator's alone, whatever the umask.

Every service process calls `make_private` as it starts: the umask becomes 077 (new files 0600,
folders 0700) and the data folder is made 0700, so another local user can read no upload, database,
log or model, including those an earlier run wrote with a looser umask.
"""

from __future__ import annotations

import os

from salesflow.config import Settings

__all__ = ["PRIVATE_UMASK", "make_private"]

#: Group and others get nothing: files 0600, folders 0700.
PRIVATE_UMASK = 0o077


def make_private(settings: Settings) -> None:
    """Set this process's umask to 077 and make the data folder 0700 (created if missing)."""
    os.umask(PRIVATE_UMASK)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
