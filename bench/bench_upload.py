"""Upload throughput and the upload service's memory: file:// and S3 (moto), HTTP and direct.

For one large generated CSV, side by side: a plain file copy (the floor for file://), boto3's own
`upload_file` (the reference for S3), salesflow's store writer directly (`put_file`: hashing and
fsync / multipart included), and the upload service over HTTP on loopback (`salesflow serve upload`
as a child process, fed by the CLI's streaming client). The service's peak resident memory (VmHWM)
is read from /proc just before it is stopped: it must stay flat whatever the file size; its CPU
seconds per upload (and the client's) show how much of the 2 cores a transfer takes.

Every variant runs once per round, the rounds interleaved, after an untimed warm-up round, and
every run's output is deleted before the next: on a VM, writing into memory the guest has just
freed is several times cheaper than into memory the host must fault in again (the moto server
too, holding each object in RAM), so variants run in different states would not be a fair race.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Report,
    console,
    cpu_seconds,
    free_port,
    median,
    missing_module,
    python_argv,
    timed,
    vm_hwm_mb,
)

NAME = "upload"
TITLE = "Upload: file:// and S3, through the service and direct, vs copy and boto3"

#: File size per mode; the generator writes ~87 bytes per row with the default catalogue.
SIZE_MB = {"smoke": 50, "full": 1000}
BYTES_PER_ROW = 87
#: Measured repetitions per variant, interleaved after one untimed warm-up round; medians reported.
REPS = {"smoke": 2, "full": 2}
#: Goals from the project's issue: the service streams, so its memory does not grow with the file;
#: a 1 GB file stored to local disk at >= 500 MB/s and to S3 at >= 80% of boto3's own upload_file
#: (the store writer's figures: like the copy and upload_file it is compared with, it stores a
#: local file). The upload service over HTTP is held to the same figures as a stretch goal: it
#: also receives the file and inspects it, on the cores the client (and moto) use too.
TARGET_RSS_MB = 150.0
TARGET_LOCAL_MB_S = 500.0
TARGET_S3_VS_BOTO3 = 0.8
#: Dummy credentials for the local moto server only (it accepts any).
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: How long a child service gets to answer /readyz.
READY_TIMEOUT_S = 60.0


@contextmanager
def fake_aws(work: Path) -> Iterator[dict[str, str]]:
    """Point this process (and children given the returned env) at dummy AWS credentials."""
    missing = str(work / "no-aws-config")
    values = {**FAKE_AWS, "AWS_CONFIG_FILE": missing, "AWS_SHARED_CREDENTIALS_FILE": missing}
    saved = {k: os.environ.get(k) for k in [*values, "AWS_PROFILE"]}
    os.environ.update(values)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield values
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def child(
    argv: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool]
) -> Iterator[int]:
    """A child process started, waited for until `ready()`, and always stopped; yields its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{argv[2:5]} exited during start-up:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{argv[2:5]} not ready after {READY_TIMEOUT_S:.0f} s; see {log}"
                )
            time.sleep(0.1)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def broker(ctx: Context, bootstrap: str) -> Iterator[None]:
    """The local Kafka-API broker, so the service's outbox relay publishes as it would in use."""
    try:
        from salesflow.kafka import LocalBroker
    except ImportError:
        yield  # without a broker events wait in the outbox; uploads are unaffected
        return
    host, port = bootstrap.rsplit(":", 1)
    with LocalBroker(host, int(port), log_path=ctx.work / f"broker-{port}.log"):
        yield


def _http_ok(url: str) -> Callable[[], bool]:
    import httpx

    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


@contextmanager
def moto_server(ctx: Context, env: dict[str, str]) -> Iterator[str]:
    """moto's S3 API server as a child process (its own interpreter, so no GIL shared with us)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = python_argv("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port))
    with child(argv, env, ctx.work / "moto.log", _http_ok(f"{url}/moto-api/")):
        yield url


def _bucket(endpoint: str) -> str:
    import boto3

    name = f"bench-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def run(ctx: Context) -> Report:
    report = Report(NAME, TITLE, ctx.mode)
    rows = SIZE_MB[ctx.mode] * 1_000_000 // BYTES_PER_ROW
    source = ctx.sales_file(rows)
    size = source.stat().st_size
    size_mb = size / 1e6
    report.notes.append(
        f"file: {rows:,} rows, {size_mb:,.0f} MB; the store writer hashes (sha256) on the way and "
        "fsyncs (file://) or completes a multipart upload (S3) before it returns"
    )
    why = missing_module("boto3", "moto.server")
    with fake_aws(ctx.work) as aws_env:
        base_env = {**os.environ, **aws_env}
        if why:
            report.skip("S3 rows", why)
            _measure(ctx, report, source, size_mb, None, base_env)
        else:
            with moto_server(ctx, base_env) as endpoint:
                _measure(ctx, report, source, size_mb, endpoint, base_env)
    return report


def _measure(
    ctx: Context,
    report: Report,
    source: Path,
    size_mb: float,
    endpoint: str | None,
    env: dict[str, str],
) -> None:
    """Every variant once per round, rounds interleaved, after one untimed warm-up round: no
    variant meets a cold moto server (which faults memory in on its first large objects) or page
    cache that the others do not, the service's runs included."""
    from salesflow.storage import open_store

    target = ctx.work / "upload-target"
    target.mkdir(parents=True, exist_ok=True)
    file_settings = ctx.settings("upload-file")
    file_store = open_store(file_settings.storage_url, file_settings)
    #: name -> (the timed run, what removes its output afterwards, untimed)
    variants: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}
    copied = target / "copy.csv"

    def copy() -> None:
        shutil.copyfile(source, copied)

    def copy_fsync() -> None:
        shutil.copyfile(source, copied)
        fd = os.open(copied, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def file_writer() -> None:
        file_store.put_file("bench/direct.csv", source)

    def remove_copy() -> None:
        copied.unlink(missing_ok=True)

    variants["shutil.copyfile (file://)"] = (copy, remove_copy)
    variants["shutil.copyfile + fsync (file://)"] = (copy_fsync, remove_copy)
    variants["store writer, file:// (put_file)"] = (
        file_writer,
        lambda: file_store.delete("bench/direct.csv"),
    )

    s3_settings = None
    if endpoint is not None:
        import boto3

        bucket = _bucket(endpoint)
        s3_settings = ctx.settings(
            "upload-s3",
            storage_url=f"s3://{bucket}/store",
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
        )
        s3_store = open_store(s3_settings.storage_url, s3_settings)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

        def boto3_upload() -> None:
            client.upload_file(str(source), bucket, "boto3/direct.csv")

        def s3_writer() -> None:
            s3_store.put_file("bench/direct.csv", source)

        variants["boto3 upload_file (S3, moto)"] = (
            boto3_upload,
            lambda: client.delete_object(Bucket=bucket, Key="boto3/direct.csv"),
        )
        variants["store writer, S3 (put_file)"] = (
            s3_writer,
            lambda: s3_store.delete("bench/direct.csv"),
        )

    services: list[_Service] = []
    why = missing_module("salesflow.services.upload.app", "salesflow.clients.upload")
    with ExitStack() as stack:
        if why:
            report.skip("upload service over HTTP", why)
        else:
            kafka = f"127.0.0.1:{free_port()}"
            stack.enter_context(broker(ctx, kafka))
            labelled = [("file://", file_settings), ("S3, moto", s3_settings)]
            for label, settings in labelled:
                if settings is not None:
                    service = stack.enter_context(_service(ctx, settings, label, kafka, env))
                    services.append(service)
                    variants[service.variant] = (
                        lambda service=service: service.upload(source),
                        lambda service=service: service.remove_last(),
                    )
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(REPS[ctx.mode] + 1):
            for name, (fn, remove) in variants.items():
                with timed() as t:
                    fn()
                if round_:  # round 0 warms up
                    times[name].append(t[0])
                remove()
        peaks = {service.label.split(",")[0]: vm_hwm_mb(service.pid) for service in services}
    for name, samples in times.items():
        row: dict[str, Any] = {"variant": name, "seconds": median(samples)}
        row["mb_per_s"] = size_mb / row["seconds"]
        for service in services:
            if service.variant == name:
                peak = peaks[service.label.split(",")[0]]
                row["service_peak_rss_mb"] = peak
                row["service_idle_rss_mb"] = service.idle_mb
                row["service_cpu_s"] = median(service.cpu[1:])
                row["client_cpu_s"] = median(service.client_cpu[1:])
                console.print(f"  upload service ({service.label}): peak RSS {peak:.0f} MB")
        report.add(**row)
    _summarise(report, peaks, full=ctx.mode == "full")


class _Service:
    """A running `salesflow serve upload` child and the client that uploads through it."""

    def __init__(self, pid: int, label: str, client: Any, store: Any) -> None:
        self.pid, self.label = pid, label
        self.variant = f"upload service over HTTP ({label})"
        self.idle_mb = vm_hwm_mb(pid)
        self.cpu: list[float] = []
        self.client_cpu: list[float] = []
        self._client, self._store = client, store
        self._last: str | None = None

    def upload(self, source: Path) -> None:
        cpu_before, own_before = cpu_seconds(self.pid), time.process_time()
        record = self._client.upload(source, force=True)
        self.cpu.append(cpu_seconds(self.pid) - cpu_before)
        self.client_cpu.append(time.process_time() - own_before)
        self._last = record["upload_id"]
        if record.get("size") != source.stat().st_size:
            raise RuntimeError(f"the service stored {record.get('size')} bytes")

    def remove_last(self) -> None:
        from salesflow.sales.contract import upload_key

        if self._last is not None:
            self._store.delete(upload_key(self._last))  # moto keeps objects in memory


@contextmanager
def _service(
    ctx: Context, settings: Any, label: str, kafka: str, env: dict[str, str]
) -> Iterator[_Service]:
    """`salesflow serve upload` as a child on `settings`' store, with its client."""
    from salesflow.clients.upload import UploadClient
    from salesflow.storage import open_store

    port = free_port()
    service = type(settings)(
        **{
            "data_dir": settings.data_dir,
            "storage_url": settings.storage_url,
            "s3_endpoint_url": settings.s3_endpoint_url,
            "s3_region": settings.s3_region,
            "s3_part_size": settings.s3_part_size,
            "s3_max_concurrency": settings.s3_max_concurrency,
            "upload_port": port,
            "kafka_bootstrap_servers": kafka,
            "_env_file": None,
        }
    )
    argv = python_argv("-m", "salesflow.cli", "serve", "upload")
    log = ctx.work / f"upload-service-{port}.log"
    ready = _http_ok(f"{service.upload_service_url}/healthz")
    with (
        child(argv, {**env, **service.to_env()}, log, ready) as pid,
        UploadClient(service) as client,
    ):
        yield _Service(pid, label, client, open_store(service.storage_url, service))


def _summarise(report: Report, peaks: dict[str, float], *, full: bool) -> None:
    """Ratios and headlines; the throughput targets only at full size (the issue sets them for 1 GB:
    at smoke size the preview's parse of the first 16 MB dominates the service's time)."""
    rates = {row["variant"]: row["mb_per_s"] for row in report.rows}

    def ratio(a: str, b: str) -> float | None:
        return round(rates[a] / rates[b], 2) if a in rates and b in rates else None

    pairs = {
        "service file:// / copyfile": (
            "upload service over HTTP (file://)",
            "shutil.copyfile (file://)",
        ),
        "writer file:// / copyfile+fsync": (
            "store writer, file:// (put_file)",
            "shutil.copyfile + fsync (file://)",
        ),
        "service S3 / boto3": (
            "upload service over HTTP (S3, moto)",
            "boto3 upload_file (S3, moto)",
        ),
        "writer S3 / boto3": ("store writer, S3 (put_file)", "boto3 upload_file (S3, moto)"),
    }
    for name, (a, b) in pairs.items():
        value = ratio(a, b)
        if value is not None:
            report.ratios[name] = value
    local = ("store writer, file:// (put_file)", "upload service over HTTP (file://)")
    for variant, rate in rates.items():
        if variant.startswith(("upload service", "boto3", "store writer", "shutil.copyfile (")):
            goal = None
            if full and variant in local:
                stretch = variant.startswith("upload service")
                goal = report.target(variant, rate, TARGET_LOCAL_MB_S, "MB/s", stretch=stretch)
            report.headline(variant, f"{rate:,.0f} MB/s", goal)
    for name in ("writer S3 / boto3", "service S3 / boto3"):
        if name in report.ratios:
            ratio = report.ratios[name]
            stretch = name.startswith("service")
            goal = None
            if full:
                goal = report.target(name, ratio, TARGET_S3_VS_BOTO3, "x", stretch=stretch)
            report.headline(f"upload to S3, {name}", f"{ratio:.2f}x", goal)
    if not full:
        report.notes.append(
            "throughput targets (>= 500 MB/s to file://, >= 0.8x boto3 to S3) are judged at 1 GB "
            "(`--only upload`); at smoke size the preview's parse of the first 16 MB dominates"
        )
    if peaks:
        worst = max(peaks.values())
        target = report.target("upload service peak RSS", worst, TARGET_RSS_MB, "MB", higher=False)
        shown = ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())
        report.headline("upload service peak RSS (VmHWM)", shown, target)
