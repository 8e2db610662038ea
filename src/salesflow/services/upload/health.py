"""The upload service's readiness checks, answered by the shared `/healthz` and `/readyz` router.

Ready when storage and the database answer. Kafka being down is reported, not fatal: uploads are
still accepted and their events wait in the outbox (`outbox_pending` says how many).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter

from salesflow.errors import SalesflowError
from salesflow.kafka import broker_reachable
from salesflow.services.http import ReadinessCheck, health_router
from salesflow.services.upload.deps import Resources
from salesflow.services.upload.outbox import bootstrap_accepts

__all__ = ["CHECK_TIMEOUT_S", "HEALTH_KEY", "health_routes"]

#: The storage readiness probe writes this small object (outside the upload prefix).
HEALTH_KEY = "_health/upload-service.probe"
#: A readiness check slower than this counts as failing: a probe must answer quickly.
CHECK_TIMEOUT_S = 5.0


def health_routes(resources: Callable[[], Resources]) -> APIRouter:
    """`/healthz` and `/readyz` over the resources the lifespan built (`resources()` finds them)."""

    async def storage() -> str | None:
        return await _check(lambda: resources().store.put(HEALTH_KEY, [b"ok"]))

    async def database() -> str | None:
        return await _check(resources().db.ping)

    async def kafka() -> str | None:
        if await _check(_kafka_probe(resources())) is None:
            return None
        pending = await _pending(resources())
        return f"unreachable (events wait in the outbox: {pending} pending)"

    async def details() -> dict[str, Any]:
        return {"outbox_pending": await _pending(resources())}

    checks: dict[str, ReadinessCheck] = {"storage": storage, "database": database}
    return health_router(checks, advisory={"kafka": kafka}, details=details)


async def _pending(resources: Resources) -> int:
    return await anyio.to_thread.run_sync(resources.db.pending_count)


def _kafka_probe(resources: Resources) -> Callable[[], None]:
    def probe() -> None:
        settings = resources.settings
        # The TCP pre-flight answers at once when nothing listens; metadata proves it is Kafka.
        if not bootstrap_accepts(settings) or not broker_reachable(
            settings, timeout=CHECK_TIMEOUT_S / 2
        ):
            raise ConnectionError("broker unreachable")

    return probe


async def _check(probe: Callable[[], object]) -> str | None:
    """Run a blocking probe on a thread with a deadline: None if it answered, else a short reason."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except SalesflowError as exc:
        return f"failing ({exc.code})"
    except Exception as exc:
        return f"failing ({type(exc).__name__})"
    return None
