"""The job server's routes: thin adapters from HTTP to the job table, the runner, the registry and
the warm in-process forecast service."""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from salesflow import faults
from salesflow.errors import (
    BusyError,
    InputError,
    InvalidKeyError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from salesflow.registry import normalise_version
from salesflow.sales.contract import HEADER_PROBE_BYTES, check_header, upload_key
from salesflow.services.jobs.db import MAX_LIST
from salesflow.services.jobs.deps import (
    DbDep,
    RegistryDep,
    ServerState,
    SettingsDep,
    StateDep,
)
from salesflow.services.jobs.engine import PredictOutcome
from salesflow.services.jobs.history_routes import resolve_series
from salesflow.services.jobs.models import accuracy_view, model_view, models_listing
from salesflow.serving.service import MAX_QUERIES, ForecastService, coherence_of
from salesflow.serving.service import Query as ForecastQuery
from salesflow.urls import local_path_of

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Copy size when saving a prediction input.
_CHUNK = 1024 * 1024


class TrainRequest(BaseModel):
    """Train on a stored upload. The location is derived from the id, never taken from the caller.

    `replay`: retrain a past upload from its stored file as a new job (and a new version).
    `mode`: what the upload does to store x days the history holds (default: the setting; a
    replay without one keeps the first job's).
    """

    upload_id: str
    sha256: str | None = None
    url: str | None = None
    replay: bool = False
    mode: Literal["replace", "append", "reject"] | None = None


class QueryBody(BaseModel):
    """One forecast question: a store, a product, and a month (YYYY-MM) or a date (YYYY-MM-DD)."""

    store_id: str
    product_id: str
    month: str | None = Field(None, description="YYYY-MM (`period` is accepted too)")
    period: str | None = None
    date: str | None = Field(
        None, description="YYYY-MM-DD: the day model's forecast (its month's without one)"
    )


class ForecastRequest(BaseModel):
    """Up to 10,000 questions answered by one model version (default: the active one)."""

    queries: list[QueryBody]
    model: str | None = None


def get_forecasts(request: Request) -> ForecastService:
    """The lifespan's ForecastService."""
    found = getattr(request.app.state, "forecasts", None)
    if not isinstance(found, ForecastService):
        raise UnavailableError("the job server is starting")
    return found


ForecastDep = Annotated[ForecastService, Depends(get_forecasts)]


class ActivateRequest(BaseModel):
    """Why a version is being activated (kept in the activation log)."""

    reason: str = "activated through the job server API"


# --- training jobs ---------------------------------------------------------------------------


@router.post("/train", status_code=202)
def post_train(body: TrainRequest, state: StateDep) -> dict[str, Any]:
    """Queue training on an upload the upload service reports (409 with the reason for one it does
    not, or a rejected one); the same upload id answers with the same job unless `replay`."""
    db, store, runner, settings = state.db, state.store, state.runner, state.settings
    url = store.url_for(upload_key(body.upload_id))
    if body.url is not None and body.url != url:
        raise InvalidKeyError(
            f"url does not name upload {body.upload_id} in the job server's store; "
            "leave it out: the job server derives the location from the upload id"
        )
    if body.sha256 is not None and not _SHA256.fullmatch(body.sha256):
        raise InputError("sha256 must be 64 lowercase hex digits")
    sha256 = state.admission.sha256_to_train(body.upload_id, body.sha256)
    mode: str | None = body.mode
    if body.replay:
        store.head(upload_key(body.upload_id))  # 404 unless the file is still stored
        first = db.first_train(body.upload_id)
        sha256 = sha256 or (first.sha256 if first else None)
        mode = mode or (first.mode if first else None)
    job, created = db.create_train(body.upload_id, url, sha256, replay=body.replay, mode=mode)
    if created:
        runner.kick()
        faults.reached(settings, "jobs.after_accept")
    return {**job.to_dict(), "created": created}


@router.get("/jobs")
def list_jobs(
    db: DbDep,
    upload_id: str | None = None,
    status: Literal["queued", "running", "succeeded", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> dict[str, Any]:
    """Jobs, newest first."""
    return {"jobs": [j.to_dict() for j in db.find(upload_id=upload_id, status=status, limit=limit)]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, db: DbDep) -> dict[str, Any]:
    """One job with its status, metrics and log tail."""
    return db.get(job_id).to_dict()


@router.get("/jobs/{job_id}/output")
def get_job_output(job_id: str, db: DbDep) -> FileResponse:
    """The CSV a predict job wrote (404 until it has succeeded)."""
    job = db.get(job_id)
    if job.kind != "predict":
        raise NotFoundError(f"job {job_id} is a {job.kind} job; only predict jobs have an output")
    if job.status != "succeeded" or not job.output_path or not Path(job.output_path).is_file():
        raise NotFoundError(f"job {job_id} has no output yet (status {job.status})")
    return FileResponse(
        job.output_path, media_type="text/csv", filename=f"predictions-{job_id}.csv"
    )


@router.get("/jobs/{job_id}/rejects")
def get_job_rejects(job_id: str, db: DbDep, settings: SettingsDep) -> FileResponse:
    """The rows a train job rejected, as CSV with a reject_reason column (404 when none)."""
    url = db.get(job_id).result.get("rejects_url")
    root = (settings.warehouse_path / "rejects").resolve()
    path = local_path_of(url).resolve() if isinstance(url, str) and url[:5] == "file:" else None
    if path is None or not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"job {job_id} has no rejects file")
    return FileResponse(path, media_type="text/csv", filename=f"rejects-{job_id}.csv")


# --- predictions -----------------------------------------------------------------------------


def _save(src: BinaryIO, path: Path, limit: int) -> tuple[int, bytes]:
    """Copy an uploaded file to `path`; its size and first bytes (for the header check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size, head = 0, b""
    with path.open("wb") as out:
        while chunk := src.read(_CHUNK):
            if len(head) < HEADER_PROBE_BYTES:
                head += chunk[: HEADER_PROBE_BYTES - len(head)]
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"the file is larger than the limit of {limit} bytes")
            out.write(chunk)
    return size, head


def _json_answer(outcome: PredictOutcome) -> JSONResponse:
    return JSONResponse(
        {
            "model_version": outcome.model_version,
            "granularity": "month",
            "row_count": outcome.rows,
            "rows": outcome.records or [],
            "unknown_stores": outcome.unknown_stores,
            "unknown_products": outcome.unknown_products,
            "rows_dropped": outcome.rows_dropped,
            "dropped": outcome.dropped,
            "lineage": outcome.lineage,
            "notes": outcome.notes,
        },
        headers={"X-Model-Version": outcome.model_version},
    )


@router.post("/predict", response_model=None)
async def post_predict(
    request: Request,
    state: StateDep,
    file: Annotated[UploadFile, File(description="A sales CSV; quantity is optional.")],
    model: str | None = None,
    per_month: Annotated[
        bool, Query(description="One row per store/product/month instead of per input row")
    ] = False,
) -> Response:
    """Predict a CSV: small files at once (CSV, or JSON with Accept: application/json), large as a
    job; one answer row per input row in its order (422 when every row is dropped)."""
    settings = state.settings
    version = normalise_version(model) if model else None
    if version:
        await run_in_threadpool(state.registry.get, version)  # 404 before any work
    source = settings.data_dir / "predict-inputs" / f"{secrets.token_hex(16)}.csv"
    try:
        size, head = await run_in_threadpool(_save, file.file, source, settings.max_upload_bytes)
        check_header(head, require_quantity=False)
        if size > settings.predict_sync_max_bytes:
            job_id = secrets.token_hex(16)
            output = settings.data_dir / "predict-outputs" / f"{job_id}.csv"
            job = await run_in_threadpool(
                state.db.create_predict, source.as_uri(), version, output, job_id, per_month
            )
            state.runner.kick()
            return JSONResponse(job.to_dict(), status_code=202)
        # The runner deletes a job's input; a synchronous one is deleted below.
        return await _predict_now(request, state, source, version, per_month)
    except BaseException:
        source.unlink(missing_ok=True)
        raise


async def _predict_now(
    request: Request, state: ServerState, source: Path, version: str | None, per_month: bool
) -> Response:
    """Predict now (in-process, or on the warm session), within the concurrency limit; deletes
    `source`."""
    predict = state.runner.predict_now_fn
    if predict is None:
        state.startup.require()
        predict = state.runner.predict_fn
    limit = state.settings.predict_max_concurrent
    if not state.predict_slots.acquire(blocking=False):
        raise BusyError(f"{limit} predictions are already running; retry in a moment")
    try:
        if "application/json" in request.headers.get("accept", ""):
            outcome = await run_in_threadpool(
                predict, source, version=version, csv_out=None, per_month=per_month
            )
            return _json_answer(outcome)
        out = state.settings.data_dir / "predict-outputs" / f"sync-{secrets.token_hex(16)}.csv"
        try:
            outcome = await run_in_threadpool(
                predict, source, version=version, csv_out=out, per_month=per_month
            )
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return FileResponse(
            out,
            media_type="text/csv",
            headers={
                "X-Model-Version": outcome.model_version,
                "X-Rows-Dropped": str(sum((outcome.rows_dropped or {}).values())),
            },
            background=BackgroundTask(out.unlink, missing_ok=True),
        )
    finally:
        state.predict_slots.release()
        source.unlink(missing_ok=True)


# --- forecasts -------------------------------------------------------------------------------


def _query(body: QueryBody, index: int | None = None) -> ForecastQuery:
    try:
        return ForecastQuery.of(
            body.store_id, body.product_id, month=body.month or body.period, date=body.date
        )
    except InputError as exc:
        raise InputError(f"query {index}: {exc}" if index is not None else str(exc)) from None


@router.get("/forecast")
def get_forecast(
    forecasts: ForecastDep,
    settings: SettingsDep,
    store_id: str,
    product_id: str,
    month: Annotated[str | None, Query(description="YYYY-MM")] = None,
    date: Annotated[
        str | None,
        Query(description="YYYY-MM-DD: the day model's forecast (its month's without one)"),
    ] = None,
    model: str | None = None,
) -> JSONResponse:
    """One forecast with its interval, basis and the model's lineage, from the warm model; a store
    or product may be given by its name (`resolved` says which id it named)."""
    store, product = resolve_series(settings, store_id, product_id)
    query = _query(QueryBody(store_id=store.id, product_id=product.id, month=month, date=date))
    batch = forecasts.forecast([query], model)
    answer = batch.to_dict()
    named = {k: r.to_dict() for k, r in (("store", store), ("product", product)) if r.name}
    if named:
        answer["resolved"] = named
    return JSONResponse(answer, headers={"X-Model-Version": batch.model_version})


@router.post("/forecast")
def post_forecast(body: ForecastRequest, forecasts: ForecastDep) -> JSONResponse:
    """Up to 10,000 forecasts from one model version, with its lineage once (413 beyond)."""
    if len(body.queries) > MAX_QUERIES:
        raise TooLargeError(f"{len(body.queries)} queries; at most {MAX_QUERIES} per request")
    if not body.queries:
        raise InputError("queries is empty: ask at least one question")
    batch = forecasts.forecast([_query(q, i) for i, q in enumerate(body.queries)], body.model)
    return JSONResponse(batch.to_dict(), headers={"X-Model-Version": batch.model_version})


# --- models ----------------------------------------------------------------------------------


@router.get("/models")
def list_models(registry: RegistryDep) -> dict[str, Any]:
    """Versions newest first with their details, the active ones, the last activations: the page."""
    return models_listing(registry)


@router.get("/models/{version}/coherence")
def get_coherence(version: str, registry: RegistryDep) -> dict[str, Any]:
    """A day model's check of its daily forecasts summed per month against the month model's."""
    return coherence_of(registry, None if version == "active" else version)


@router.get("/models/{version}/accuracy")
def get_accuracy(version: str, registry: RegistryDep) -> dict[str, Any]:
    """A version's backtest WAPE, MASE and skill per store/product, worst first ("active": the
    active month model's); 404 for an unknown version."""
    found = registry.require_active("month") if version == "active" else registry.get(version)
    return accuracy_view(found)


@router.post("/models/{version}/activate")
def activate_model(
    version: str, registry: RegistryDep, body: ActivateRequest | None = None
) -> dict[str, Any]:
    """Make a version the active model (also a rollback); 404 for an unknown version."""
    reason = (body or ActivateRequest()).reason[:500]
    return model_view(registry.activate(version, reason=reason, actor="job-server api"))
