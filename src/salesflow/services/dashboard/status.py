"""One look at the whole system for the overview: each service's readiness, the broker, the consumer's
lag and the active model, gathered at once and cached for a moment."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from salesflow import kafka
from salesflow.config import Settings
from salesflow.services.dashboard.models import complete_models
from salesflow.services.dashboard.proxy import Upstream, UpstreamError

__all__ = ["StatusBoard"]

#: Each probe gets this long; the overview polls, so a slow part shows "no answer" rather than wait.
PROBE_TIMEOUT_S = 3.0
#: Answers are reused for this long: every open tab polls, and a lag probe opens a Kafka client.
CACHE_S = 2.0


class StatusBoard:
    """Builds (and briefly caches) the /api/status answer."""

    def __init__(
        self, settings: Settings, upload: Upstream, jobs: Upstream, warehouse: Path | None
    ) -> None:
        self.settings = settings
        self.models_root = warehouse / "models" if warehouse else None
        self.upload = upload
        self.jobs = jobs
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = anyio.Lock()

    async def status(self) -> dict[str, Any]:
        """The system's status; at most one probe round runs at a time."""
        async with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_S:
                return self._cached[1]
            result = await self._probe()
            self._cached = (time.monotonic(), result)
            return result

    async def _probe(self) -> dict[str, Any]:
        results: dict[str, Any] = {}

        async def run(name: str, probe: Callable[[], Awaitable[Any]]) -> None:
            results[name] = await probe()

        async with anyio.create_task_group() as group:
            group.start_soon(run, "upload", lambda: self._service(self.upload))
            group.start_soon(run, "jobs", lambda: self._service(self.jobs))
            group.start_soon(run, "kafka", self._kafka)
            group.start_soon(run, "models", self._models)
        services = [
            {"name": "dashboard", "ok": True, "status": "ready", "checks": {}},
            results["upload"],
            results["jobs"],
        ]
        return {
            "services": services,
            "broker": results["kafka"][0],
            "consumer": {
                "group": self.settings.kafka_consumer_group,
                "topic": self.settings.kafka_uploads_topic,
                "lag": results["kafka"][1],
            },
            "active_model": results["models"],
            "ok": all(s["ok"] for s in services) and results["kafka"][0]["reachable"],
        }

    async def _service(self, upstream: Upstream) -> dict[str, Any]:
        try:
            code, body = await upstream.get_json("/readyz", timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError:
            return {"name": upstream.name, "ok": False, "status": "unreachable", "checks": {}}
        body = body if isinstance(body, dict) else {}
        return {
            "name": upstream.name,
            "ok": code == 200,
            "status": str(body.get("status", f"HTTP {code}")),
            "checks": body.get("checks", {}),
        }

    async def _kafka(self) -> tuple[dict[str, Any], int | None]:
        """The broker's reachability, then the group's lag (not asked of an unreachable broker:
        that only waits out the timeout and fills the log with connection errors)."""
        reachable = bool(
            await self._in_thread(
                lambda: kafka.broker_reachable(self.settings, timeout=PROBE_TIMEOUT_S - 0.5)
            )
        )
        broker = {"bootstrap": self.settings.kafka_bootstrap_servers, "reachable": reachable}
        if not reachable:
            return broker, None
        lag = await self._in_thread(
            lambda: kafka.consumer_lag(self.settings, timeout=PROBE_TIMEOUT_S - 0.5)
        )
        return broker, lag if isinstance(lag, int) else None

    async def _models(self) -> dict[str, Any] | None:
        try:
            code, body = await self.jobs.get_json("/models", timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError:
            return None
        if code != 200 or not isinstance(body, dict):
            return None
        active = body.get("active")
        found = [m for m in body.get("models") or [] if m.get("version") == active]
        completed = await anyio.to_thread.run_sync(
            complete_models, {"models": found, "history": []}, self.models_root
        )
        return next(iter(completed["models"]), None)

    @staticmethod
    async def _in_thread(fn: Callable[[], Any]) -> Any:
        """Run a blocking probe with a deadline; None when it fails or takes too long."""
        with anyio.move_on_after(PROBE_TIMEOUT_S):
            try:
                return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
            except Exception:
                return None
        return None
