"""The upload service's HTTP routes: thin adapters over streaming.py, db.py and the outbox relay."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from salesflow.logs import bind
from salesflow.sales.contract import new_upload_id
from salesflow.services.http import CLIENT_CLOSED
from salesflow.services.upload.deps import DBDep, RelayDep, SettingsDep, SlotsDep, StoreDep
from salesflow.services.upload.streaming import store_upload

__all__ = ["uploads"]

log = logging.getLogger(__name__)

uploads = APIRouter(prefix="/uploads", tags=["uploads"])

#: The body POST /uploads reads as a stream, declared for the OpenAPI schema (FastAPI cannot see
#: a body the route reads itself): one multipart `file` part.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}

ReportedStatus = Literal["queued", "training", "trained", "failed", "rejected"]
UploadStatus = Literal["stored", "queued", "training", "trained", "failed", "rejected"]


class StatusReport(BaseModel):
    """A status report from the consumer or the job server."""

    status: ReportedStatus
    job_id: str | None = Field(None, max_length=200)
    model_version: str | None = Field(None, max_length=200)
    error_code: str | None = Field(None, max_length=100)
    error: str | None = None
    metrics: dict[str, Any] | None = None
    #: The consumer's rejections carry the event's claim about the file; it must be this upload's.
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")
    size: int | None = Field(None, ge=0)


@uploads.post("", status_code=202, openapi_extra=UPLOAD_BODY)
async def create_upload(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    db: DBDep,
    relay: RelayDep,
    slots: SlotsDep,
    force: bool = False,
    mode: Literal["replace", "append", "reject"] | None = None,
) -> Response:
    """Stream a CSV into storage and queue its event (202), or point at an identical upload (200).

    `mode`: what the upload does to store x days the curated history holds (replace, append,
    reject; default: the job server's history_mode setting)."""
    slots.acquire()
    try:
        upload_id = new_upload_id()
        with bind(upload_id=upload_id):
            try:
                record, duplicate = await store_upload(
                    request.stream(),
                    upload_id=upload_id,
                    content_type=request.headers.get("content-type"),
                    content_length=_content_length(request),
                    settings=settings,
                    store=store,
                    db=db,
                    force=force,
                    mode=mode,
                )
            except ClientDisconnect:
                log.info("the client disconnected mid-upload; nothing was stored")
                return Response(status_code=CLIENT_CLOSED)
            if duplicate:
                log.info("duplicate of upload %s; the new copy was dropped", record.upload_id)
                return JSONResponse({**record.to_dict(), "duplicate": True}, status_code=200)
            relay.kick()
            log.info("stored an upload of %d bytes", record.size)
            return JSONResponse({**record.to_dict(), "duplicate": False}, status_code=202)
    finally:
        slots.release()


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


@uploads.get("")
def list_uploads(
    db: DBDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[UploadStatus | None, Query()] = None,
) -> dict[str, Any]:
    """Uploads, newest first."""
    return {"uploads": [record.to_dict() for record in db.recent(limit=limit, status=status)]}


@uploads.get("/{upload_id}")
def get_upload(upload_id: str, db: DBDep) -> dict[str, Any]:
    """One upload's record."""
    return db.get(upload_id).to_dict()


@uploads.post("/{upload_id}/status")
def report_status(upload_id: str, report: StatusReport, db: DBDep) -> dict[str, Any]:
    """Record a consumer/job-server status; terminal uploads and stale reports are left as they are."""
    with bind(upload_id=upload_id, job_id=report.job_id):
        record, applied = db.update_status(
            upload_id, report.status, **report.model_dump(exclude={"status"})
        )
        if applied:
            log.info("status -> %s", report.status)
        else:
            log.info("status %s ignored: the upload is %s", report.status, record.status)
        return record.to_dict()
