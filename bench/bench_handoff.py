"""The hand-off: upload accepted -> Kafka event -> consumer verified -> training job running.

The whole stack runs as `salesflow up` runs it (salesflow.cli.supervisor.Stack: broker, job server,
upload service, consumer, each its own process). Small uploads go in one at a time, each after the
previous one finished training, so a job never waits behind another. Stage times come from the
records themselves: the client's clock when the upload was accepted, the event's Kafka timestamp
(read by a side consumer), the job's created_at (the consumer verified the file and asked for
training) and started_at (running). Also measured: how long a NEW consumer group waits for its
first message with the configured session timeout (and, in full mode, librdkafka's default).
"""

from __future__ import annotations

import gc
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bench.common import Context, Report, console, free_port, median, missing_module, percentiles

NAME = "handoff"
TITLE = "Hand-off: upload accepted -> Kafka -> consumer verified -> job running"

#: Measured uploads per mode, after one unmeasured warm-up upload (the consumer's first group
#: join and the job server's first, JIT-cold training would otherwise land in the numbers).
UPLOADS = {"smoke": 3, "full": 10}
#: Rows per upload: small, so each training (which follows every hand-off) is over in seconds.
UPLOAD_ROWS = 2_000
#: A small forest: the hand-off is measured, not the model, and every upload is trained.
STACK_TREES, STACK_DEPTH = 3, 3
#: First-message measurements: (label, session timeout ms, repetitions) per mode.
GROUP_RUNS: dict[str, list[tuple[str, int | None, int]]] = {
    "smoke": [("configured", None, 1)],
    "full": [("configured", None, 3), ("librdkafka default 45 s", 45_000, 1)],
}
#: Longest wait for one upload to be trained, and for a new group's first message.
TRAIN_TIMEOUT_S = 300.0
FIRST_MESSAGE_TIMEOUT_S = 120.0
#: Polling interval when waiting for a status (the stage times come from records, not polls).
POLL_S = 0.05


def _epoch(stamp: str | None) -> float | None:
    """An ISO-8601 UTC timestamp ("...Z" or "+00:00") as seconds since the epoch."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class EventTimes(threading.Thread):
    """A side consumer (own group) recording each upload event's Kafka timestamp by key."""

    def __init__(self, settings: Any) -> None:
        super().__init__(name="event-times", daemon=True)
        from confluent_kafka import Consumer

        from salesflow.kafka import consumer_config

        config = consumer_config(settings, f"bench-events-{secrets.token_hex(4)}")
        self.consumer = Consumer({**config, "enable.auto.offset.store": True})
        self.consumer.subscribe([settings.kafka_uploads_topic])
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.2)
                key = None if msg is None or msg.error() else msg.key()
                if msg is not None and key is not None:
                    self.seen.setdefault(key.decode(), msg.timestamp()[1] / 1000)
        finally:
            self.consumer.close()


def first_message_s(settings: Any, session_ms: int | None) -> float:
    """Seconds until a new consumer group gets the one message already waiting in a new topic."""
    from confluent_kafka import Consumer, Producer

    from salesflow.kafka import consumer_config, ensure_topics, producer_config

    topic = f"bench.first.{secrets.token_hex(4)}"
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings))
    producer.produce(topic, key=b"k", value=b"v")
    if producer.flush(30) != 0:
        raise RuntimeError("the broker did not take the probe message within 30 s")
    config = consumer_config(settings, f"bench-first-{secrets.token_hex(4)}")
    if session_ms is not None:
        config.update({"session.timeout.ms": session_ms, "heartbeat.interval.ms": session_ms // 3})
    start = time.perf_counter()
    consumer = Consumer(config)
    try:
        consumer.subscribe([topic])
        deadline = start + FIRST_MESSAGE_TIMEOUT_S
        while time.perf_counter() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                return time.perf_counter() - start
    finally:
        consumer.close()
    raise RuntimeError(f"no first message within {FIRST_MESSAGE_TIMEOUT_S:.0f} s")


def measure_first_message(ctx: Context, report: Report) -> None:
    from salesflow.kafka import LocalBroker

    port = free_port()
    settings = ctx.settings("handoff-group", kafka_bootstrap_servers=f"127.0.0.1:{port}")
    results: dict[str, float] = {}
    with LocalBroker("127.0.0.1", port, log_path=ctx.work / "broker-first.log"):
        for label, session_ms, reps in GROUP_RUNS[ctx.mode]:
            timeout = session_ms or settings.kafka_session_timeout_ms
            samples = [first_message_s(settings, session_ms) for _ in range(reps)]
            results[label] = median(samples)
            report.add(
                stage=f"new consumer group, first message ({label}: session {timeout / 1000:g} s)",
                samples=len(samples),
                p50_ms=median(samples) * 1000,
            )
        # librdkafka handles sit in reference cycles: free them while the broker still answers,
        # or they log connection failures for the rest of the run.
        gc.collect()
    configured = results["configured"]
    report.headline(
        f"new consumer group's first message (session timeout {settings.kafka_session_timeout_ms / 1000:g} s)",
        f"{configured:.1f} s",
    )
    if "librdkafka default 45 s" in results:
        slow = results["librdkafka default 45 s"]
        report.ratios["first message: 45 s default / configured"] = round(slow / configured, 1)
        report.headline("same with librdkafka's 45 s default", f"{slow:.1f} s")


@contextmanager
def running_stack(ctx: Context) -> Iterator[Any]:
    from pydantic import SecretStr

    from salesflow.cli.supervisor import Stack

    settings = ctx.settings(
        "handoff-stack",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_uploads_topic=f"bench.uploads.{secrets.token_hex(3)}",
        kafka_dlq_topic=f"bench.uploads.dlq.{secrets.token_hex(3)}",
        upload_port=free_port(),
        jobs_port=free_port(),
        dashboard_port=free_port(),
        auth_token=SecretStr(secrets.token_urlsafe(16)),
        num_trees=STACK_TREES,
        max_depth=STACK_DEPTH,
    )
    stack = Stack(settings)
    try:
        with_time = time.perf_counter()
        stack.start(
            on_ready=lambda c: console.print(
                f"  ready: {c.name} ({time.perf_counter() - with_time:.1f} s)"
            )
        )
        yield stack
    finally:
        gc.collect()  # free the readiness probes' Kafka clients before their broker goes away
        stack.stop()


def wait_for(check: Any, what: str, timeout: float = TRAIN_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(POLL_S)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def measure_uploads(ctx: Context, report: Report) -> None:
    from salesflow.clients.jobs import JobServerClient
    from salesflow.clients.upload import UploadClient

    files = [ctx.sales_file(UPLOAD_ROWS, seed=100 + i) for i in range(UPLOADS[ctx.mode] + 1)]
    with running_stack(ctx) as stack:
        settings = stack.settings
        events = EventTimes(settings)
        events.start()
        stages: dict[str, list[float]] = {
            "accepted -> event in Kafka": [],
            "event -> consumer verified, job created": [],
            "job created -> job running": [],
            "accepted -> job running (total)": [],
        }
        try:
            with UploadClient(settings) as uploads, JobServerClient(settings) as jobs:
                for i, path in enumerate(files):
                    record = uploads.upload(path)
                    # The service's own commit time when it reports one (same machine clock).
                    accepted = _epoch(record.get("created_at")) or time.time()
                    upload_id = record["upload_id"]

                    def running(uid: str = upload_id) -> dict[str, Any] | None:
                        return next(
                            (j for j in jobs.jobs(upload_id=uid) if j.get("started_at")), None
                        )

                    def finished(uid: str = upload_id) -> dict[str, Any] | None:
                        found = uploads.get(uid)
                        return (
                            found if found["status"] in ("trained", "failed", "rejected") else None
                        )

                    job = wait_for(running, f"the job of upload {upload_id} to run")
                    final = wait_for(finished, f"upload {upload_id} to finish")
                    if final["status"] != "trained":
                        raise RuntimeError(
                            f"upload {upload_id} ended {final['status']}: {final.get('error')}"
                        )
                    event = wait_for(lambda uid=upload_id: events.seen.get(uid), "the event", 30)
                    if i == 0:
                        continue  # the warm-up upload
                    created, started = _epoch(job["created_at"]), _epoch(job["started_at"])
                    assert created is not None and started is not None
                    stages["accepted -> event in Kafka"].append(max(event - accepted, 0.0))
                    stages["event -> consumer verified, job created"].append(created - event)
                    stages["job created -> job running"].append(started - created)
                    stages["accepted -> job running (total)"].append(started - accepted)
        finally:
            events.stop.set()
            events.join(10)
    for stage, samples in stages.items():
        pct = percentiles(samples)
        report.add(
            stage=stage, samples=len(samples), p50_ms=pct["p50"] * 1000, p95_ms=pct["p95"] * 1000
        )
    total = percentiles(stages["accepted -> job running (total)"])["p50"]
    report.headline(
        f"upload accepted -> training job running (p50 of {len(files) - 1})",
        f"{total:.2f} s",
    )
    report.notes.append(
        "'accepted' is the upload record's created_at (the service's commit), the event time is "
        "its Kafka create time, job times are the job's created_at/started_at: one machine clock"
    )


def run(ctx: Context) -> Report:
    report = Report(NAME, TITLE, ctx.mode)
    why = missing_module("confluent_kafka", "salesflow.kafka")
    if why:
        report.skip("new consumer group, first message", why)
    else:
        measure_first_message(ctx, report)
    why = missing_module(
        "salesflow.cli.supervisor",
        "salesflow.services.upload.app",
        "salesflow.clients.upload",
        "salesflow.services.jobs.app",
        "salesflow.clients.jobs",
        "salesflow.services.consumer.worker",
    )
    if why:
        report.skip("upload -> job running", why)
    else:
        measure_uploads(ctx, report)
    return report
