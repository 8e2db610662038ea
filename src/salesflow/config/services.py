"""Settings of the services: Kafka, HTTP addresses and security, uploads, event delivery, jobs."""

from __future__ import annotations

from pydantic import Field, SecretStr

__all__ = [
    "DeliverySettings",
    "FaultSettings",
    "HttpLimitSettings",
    "JobServerSettings",
    "KafkaSettings",
    "SecuritySettings",
    "ServiceSettings",
    "UploadSettings",
]


class KafkaSettings:
    """The broker, the upload-event topics, the consumer group and client timeouts."""

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap list. Use 127.0.0.1, not localhost: the local broker is IPv4 only.",
    )
    kafka_embedded: bool = Field(
        True, description="`salesflow up` starts the local Tansu broker on the bootstrap address."
    )
    kafka_uploads_topic: str = Field("sales.uploads", description="Topic of upload events.")
    kafka_dlq_topic: str = Field("sales.uploads.dlq", description="Dead-letter topic.")
    kafka_topic_partitions: int = Field(1, ge=1, description="Partitions of created topics.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication of created topics.")
    kafka_consumer_group: str = Field("salesflow-upload-consumer", description="Consumer group id.")
    kafka_session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="Consumer session timeout. librdkafka's 45 s default makes a new group wait "
        "~23 s for its first message on the local broker; 6 s brings that to ~3 s.",
    )
    kafka_delivery_timeout_ms: int = Field(
        10000,
        ge=2000,
        description="Producer delivery timeout (librdkafka's default is 300 s); the outbox retries.",
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description='Extra librdkafka settings, e.g. SASL/SSL: {"security.protocol": "SASL_SSL"}.',
    )


class ServiceSettings:
    """Where each service listens and where the others find it over HTTP."""

    host: str = Field("127.0.0.1", description="Interface every service binds to.")
    upload_port: int = Field(8001, ge=1, le=65535, description="Upload service port.")
    jobs_port: int = Field(8002, ge=1, le=65535, description="Job server port.")
    dashboard_port: int = Field(
        8003, ge=1, le=65535, description="Dashboard port (open the link `salesflow up` prints)."
    )
    upload_service_url: str = Field(
        "",
        description="Where clients find the upload service; empty means http://host:upload_port.",
    )
    job_server_url: str = Field(
        "",
        description="Where the consumer finds the job server; empty means http://host:jobs_port.",
    )
    http_timeout_s: float = Field(10.0, gt=0, description="Timeout of calls between services.")


class SecuritySettings:
    """The bearer token every service requires."""

    auth_enabled: bool = Field(
        True, description="Require a bearer token on every endpoint except /healthz and /readyz."
    )
    auth_token: SecretStr | None = Field(
        None,
        description="The bearer token. Empty: a random one is created on first start in "
        "<data_dir>/auth-token (mode 0600) and used by the CLI automatically.",
    )


class HttpLimitSettings:
    """What every HTTP service refuses before a route reads a byte: heads, bodies, slow clients."""

    http_max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Longest request line plus headers, in bytes; a longer head is refused (431) "
        "before it is buffered.",
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="A request whose headers take longer than this gets 408."
    )
    http_max_json_bytes: int = Field(
        # POST /forecast's 10,000 questions take ~1 MB of JSON.
        2 * 1024 * 1024,
        ge=1024,
        description="Largest body of every endpoint but the two file uploads (POST /uploads, "
        "POST /predict), in bytes: refused (413) from its Content-Length before it is read, or "
        "as soon as a chunked body passes it.",
    )
    http_min_body_rate_bytes_s: float = Field(
        1024.0,
        ge=0,
        description="A request body that arrives slower than this over a window "
        "(SALESFLOW_HTTP_BODY_RATE_WINDOW_S) is cut (408), so trickling clients free their "
        "upload slots. 0: no minimum.",
    )
    http_body_rate_window_s: float = Field(
        20.0, gt=0, description="The window the minimum body rate is measured over, in seconds."
    )


class UploadSettings:
    """The upload service's limits: size, concurrency, idle time, preview, fields and memory."""

    max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest accepted upload, enforced while streaming (413)."
    )
    upload_max_concurrent: int = Field(
        16, ge=1, description="Uploads streamed at once; more are refused with 503 busy."
    )
    upload_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An upload whose client sends no bytes for this long is cancelled (408).",
    )
    preview_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="The upload preview parses rows (rejects, dates, duplicates) in this many "
        "bytes of a file; beyond them it only counts lines and says `complete: false`. Python "
        "parses ~50 MB/s while storage streams ~10x faster, so parsing a whole large file would "
        "slow its upload down.",
    )
    max_field_bytes: int = Field(
        4096,
        ge=1,
        le=100_000,  # below Python's csv field cap (131072 characters)
        description="Longest accepted CSV field, in bytes; a longer one refuses the upload (400 "
        "field_too_long). It also bounds the memory a runaway quoted field can take.",
    )
    upload_malloc_arenas: int = Field(
        # Three 1 GB uploads to S3 (moto): peak RSS 138-140 MB with 2 arenas, 144-151 MB with
        # glibc's default (up to 8 per core: the pipeline and each part thread get their own).
        2,
        ge=0,
        description="glibc malloc arenas of the upload service (Linux): fewer keep its peak "
        "memory flat, its threads reusing each other's freed buffers. 0 leaves glibc's default.",
    )
    upload_mmap_threshold: int = Field(
        # Three 50 MB uploads to S3 (moto), five or six runs each: peak RSS 137-139 MB with 2 MiB,
        # 140-142 MB with glibc's moving threshold; 128 KiB: 130-132 MB, but +2 CPU-s per GB to
        # file:// (every 256 KB chunk received mapped and faulted in anew). 2 MiB: no CPU change.
        # (5 MiB parts then; with 8 MiB parts, 1 MiB: ~7 MB less at peak, +0.4 CPU-s per GB.)
        2 * 1024 * 1024,
        ge=0,
        description="Buffers of this many bytes or more get their own memory map in the upload "
        "service (Linux, glibc's M_MMAP_THRESHOLD), handed back to the system when freed. 0 "
        "leaves glibc's moving threshold, which rises with the largest buffer freed.",
    )


class DeliverySettings:
    """How upload events reach the job server: the outbox relay and the consumer's retries."""

    outbox_interval_s: float = Field(1.0, gt=0, description="How often the outbox relay runs.")
    reconcile_after_s: float = Field(
        600.0, gt=0, description="Re-publish uploads with no terminal state after this long."
    )
    consumer_backoff_initial_s: float = Field(
        0.5, gt=0, description="First retry delay after a transient failure."
    )
    consumer_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    consumer_give_up_s: float = Field(
        900.0, gt=0, description="After this long unavailable, an event goes to the dead letters."
    )


class JobServerSettings:
    """The job server: training jobs at once, its JIT warm-up and synchronous predictions."""

    jobs_concurrency: int = Field(1, ge=1, description="Training jobs run at once.")
    jobs_jit_warmup_runs: int = Field(
        10,
        ge=0,
        description="Trainings of a small generated file the job server runs in a scratch folder "
        "right after Spark starts, so the JVM has compiled Spark's code before real jobs come "
        "(a real job stops the warm-up at once). 0: none. Skipped with a cluster master.",
    )
    predict_sync_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Prediction files up to this size are answered at once; larger become jobs.",
    )
    predict_max_concurrent: int = Field(
        4,
        ge=1,
        description="Synchronous predictions run at once by the job server; more get 503 busy.",
    )
    train_requires_upload_record: bool = Field(
        True,
        description="POST /train trains only an upload the upload service reports (asked over "
        "HTTP): known, not rejected, and with the sha256 it recorded, which the job then verifies "
        "on the bytes it reads. Off only for a job server without an upload service.",
    )


class FaultSettings:
    """Fault injection (salesflow.faults); unset in production."""

    crash_point: str | None = Field(
        None,
        description="Fault tests only: fail on purpose at this named step. consumer.after_verify "
        "and consumer.after_train exit the consumer; jobs.after_accept freezes the job server "
        "(SIGSTOP) after it created a job; train.before_publish fails a Spark task in training; "
        "curate.before_commit exits a training after it wrote an upload's history folders, "
        "before the history's ledger names them.",
    )
