"""One look at the whole system: each service's readiness, the broker, the upload consumer, the
active models. The dashboard's overview (/api/status) and `salesflow status` both call `gather`.

Every probe has a deadline (PROBE_TIMEOUT_S) and the probes run at once, so the answer comes within
a few seconds even when everything is down, and says which parts are. The active models come from
the job server's /models alone: when it does not answer, `models_error` says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from salesflow import kafka
from salesflow.auth import auth_headers
from salesflow.config import Settings

__all__ = [
    "PROBE_TIMEOUT_S",
    "REQUIRED",
    "Getter",
    "active_models",
    "down_parts",
    "endpoints",
    "gather",
    "group_state",
    "http_getter",
    "system_status",
]

#: Each probe gets this long: a part that has not answered by then counts as down.
PROBE_TIMEOUT_S = 3.0
#: Kafka client calls leave this much of the probe's time for the thread hand-off.
_KAFKA_MARGIN_S = 0.5

#: The parts an upload needs on its way to a model; `salesflow status` exits 1 when one is down.
#: The dashboard is only a window on them: it is shown, not required.
REQUIRED = ("upload service", "job server", "broker", "upload consumer")

#: Consumer-group states in which the group has live members (Tansu reports no member list).
_LIVE_GROUP_STATES = {
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
}

Getter = Callable[[str, float], Awaitable[tuple[int, Any] | None]]
"""GET `path` with a timeout: (HTTP status, decoded JSON or None), or None when unreachable."""


async def gather(
    settings: Settings,
    *,
    upload: Getter,
    jobs: Getter,
    dashboard: Getter | None = None,
) -> dict[str, Any]:
    """The system's status; `dashboard=None` means the caller is the dashboard (so it is up)."""
    results: dict[str, Any] = {}

    async def run(name: str, probe: Callable[[], Awaitable[Any]]) -> None:
        results[name] = await probe()

    async with anyio.create_task_group() as group:
        if dashboard is not None:
            group.start_soon(run, "dashboard", lambda: _service("dashboard", dashboard))
        group.start_soon(run, "upload", lambda: _service("upload service", upload))
        group.start_soon(run, "jobs", lambda: _service("job server", jobs))
        group.start_soon(run, "kafka", lambda: _kafka(settings))
        group.start_soon(run, "models", lambda: active_models(jobs))
    own = {"name": "dashboard", "ok": True, "status": "ready", "checks": {}}
    services = [results.get("dashboard", own), results["upload"], results["jobs"]]
    broker, consumer = results["kafka"]
    answer = {
        "services": services,
        "broker": broker,
        "consumer": consumer,
        **results["models"],
        "endpoints": endpoints(settings),
    }
    answer["down"] = down_parts(answer)
    answer["ok"] = not answer["down"]
    return answer


def down_parts(status: dict[str, Any]) -> list[str]:
    """The required parts that are down (a consumer whose state is unknown is not counted)."""
    down = [s["name"] for s in status["services"] if s["name"] in REQUIRED and not s["ok"]]
    if not status["broker"]["reachable"]:
        down.append("broker")
    if status["consumer"].get("running") is False:
        down.append("upload consumer")
    return down


def endpoints(settings: Settings) -> dict[str, str]:
    """Where each part is expected: what to check when it is down."""
    return {
        "dashboard": f"http://{settings.host}:{settings.dashboard_port}",
        "upload service": settings.upload_service_url,
        "job server": settings.job_server_url,
        "broker": settings.kafka_bootstrap_servers,
    }


async def _service(name: str, get: Getter) -> dict[str, Any]:
    answer = await get("/readyz", PROBE_TIMEOUT_S)
    if answer is None:
        return {"name": name, "ok": False, "status": "unreachable", "checks": {}}
    code, body = answer
    body = body if isinstance(body, dict) else {}
    return {
        "name": name,
        "ok": code == 200,
        "status": str(body.get("status", f"HTTP {code}")),
        "checks": body.get("checks", {}),
    }


async def _kafka(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The broker's reachability, then the group's state and lag (not asked of an unreachable
    broker: that only waits out the timeout and fills the log with connection errors)."""
    wait = PROBE_TIMEOUT_S - _KAFKA_MARGIN_S
    reachable = bool(await _in_thread(lambda: kafka.broker_reachable(settings, timeout=wait)))
    broker = {"bootstrap": settings.kafka_bootstrap_servers, "reachable": reachable}
    consumer: dict[str, Any] = {
        "group": settings.kafka_consumer_group,
        "topic": settings.kafka_uploads_topic,
        "lag": None,
        "state": None,
        "running": None,
    }
    if not reachable:
        return broker, consumer
    async with anyio.create_task_group() as group:

        async def lag() -> None:
            found = await _in_thread(lambda: kafka.consumer_lag(settings, timeout=wait))
            consumer["lag"] = found if isinstance(found, int) else None

        async def state() -> None:
            found = await _in_thread(lambda: group_state(settings, timeout=wait))
            if isinstance(found, str):
                consumer["state"] = found
                live = found in {s.name.lower() for s in _LIVE_GROUP_STATES}
                consumer["running"] = None if found == "unknown" else live

        group.start_soon(lag)
        group.start_soon(state)
    return broker, consumer


def group_state(settings: Settings, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The upload consumer group's state ("stable", "empty", ...), None when the broker won't say."""
    admin = AdminClient(kafka.admin_config(settings))
    group = settings.kafka_consumer_group
    try:
        found = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
        described = found.result(timeout=timeout)
    except (KafkaException, TimeoutError, ValueError):
        return None
    if described.members:  # a broker that lists members: they are the proof
        return "stable"
    return str(described.state.name).lower()


async def active_models(jobs: Getter) -> dict[str, Any]:
    """`active_model` and `active_day_model` as the job server's /models shows them (None: there
    is none), and `models_error`: why they are unknown (None when the job server answered)."""
    answer = await jobs("/models", PROBE_TIMEOUT_S)
    unknown = {"active_model": None, "active_day_model": None}
    if answer is None:
        return {**unknown, "models_error": "the job server did not answer"}
    code, body = answer
    if code != 200 or not isinstance(body, dict):
        return {**unknown, "models_error": f"the job server answered /models with HTTP {code}"}
    active = body.get("active_by_granularity") or {}
    by_version = {m.get("version"): m for m in body.get("models") or [] if isinstance(m, dict)}
    return {
        "active_model": by_version.get(active.get("month")),
        "active_day_model": by_version.get(active.get("day")),
        "models_error": None,
    }


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking probe with a deadline; None when it fails or takes too long."""
    with anyio.move_on_after(PROBE_TIMEOUT_S):
        try:
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except Exception:
            return None
    return None


def http_getter(client: httpx.AsyncClient) -> Getter:
    """A Getter over an httpx client (base URL and token set on the client)."""

    async def get(path: str, timeout_s: float) -> tuple[int, Any] | None:
        try:
            response = await client.get(path, timeout=timeout_s)
        except httpx.HTTPError:
            return None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    return get


def system_status(settings: Settings) -> dict[str, Any]:
    """The status as seen from outside the services (the CLI): every service is probed over HTTP."""

    async def probe() -> dict[str, Any]:
        headers = auth_headers(settings)
        async with (
            httpx.AsyncClient(base_url=settings.upload_service_url, headers=headers) as upload,
            httpx.AsyncClient(base_url=settings.job_server_url, headers=headers) as jobs,
            httpx.AsyncClient(base_url=endpoints(settings)["dashboard"]) as dashboard,
        ):
            return await gather(
                settings,
                upload=http_getter(upload),
                jobs=http_getter(jobs),
                dashboard=http_getter(dashboard),
            )

    return anyio.run(probe)
