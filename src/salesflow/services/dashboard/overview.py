"""The overview's /api/status: salesflow.clients.status.gather over the dashboard's upstreams, cached briefly."""

from __future__ import annotations

import time
from typing import Any

import anyio

from salesflow.clients import status as system_status
from salesflow.config import Settings
from salesflow.services.dashboard.proxy import Upstream, UpstreamError

__all__ = ["PROBE_TIMEOUT_S", "StatusBoard"]

PROBE_TIMEOUT_S = system_status.PROBE_TIMEOUT_S
#: Answers are reused for this long: every open tab polls, and a lag probe opens a Kafka client.
CACHE_S = 2.0


def _getter(upstream: Upstream) -> system_status.Getter:
    """An upstream as a status Getter: None when it cannot be asked."""

    async def get(path: str, timeout_s: float) -> tuple[int, Any] | None:
        try:
            return await upstream.get_json(path, timeout_s=timeout_s)
        except UpstreamError:
            return None

    return get


class StatusBoard:
    """Builds (and briefly caches) the /api/status answer."""

    def __init__(self, settings: Settings, upload: Upstream, jobs: Upstream) -> None:
        self.settings = settings
        self.upload = upload
        self.jobs = jobs
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = anyio.Lock()

    async def status(self) -> dict[str, Any]:
        """The system's status; at most one probe round runs at a time."""
        async with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_S:
                return self._cached[1]
            result = await system_status.gather(
                self.settings,
                upload=_getter(self.upload),
                jobs=_getter(self.jobs),
            )
            self._cached = (time.monotonic(), result)
            return result
