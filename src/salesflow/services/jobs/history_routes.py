"""The job server's view of the curated history: actuals per series, the store and product ids
with their names, the uploads it holds and taking one out. Plain Python over the warehouse folder
(serving.history, sales.ledger, sales.names): no Spark."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from salesflow.config import Settings
from salesflow.sales import ledger, names
from salesflow.services.jobs.deps import SettingsDep
from salesflow.serving.history import (
    ALL,
    MAX_DAYS,
    MAX_ID_LENGTH,
    curated_root,
    read_history,
    series_ids,
)

__all__ = ["history_router", "resolve_series"]

history_router = APIRouter()

# --- the curated history -----------------------------------------------------------------------

IdQuery = Annotated[str, Query(max_length=MAX_ID_LENGTH)]


@history_router.get("/history")
def get_history(
    settings: SettingsDep,
    store_id: IdQuery = ALL,
    product_id: IdQuery = ALL,
    granularity: Literal["month", "day"] = "month",
    days: Annotated[int | None, Query(ge=1, le=MAX_DAYS, description="day: the last N")] = None,
) -> dict[str, object]:
    """Actuals of one store/product ("all": totals) per month or day, for the dashboard's chart."""
    return read_history(settings.warehouse_path, store_id, product_id, granularity, days).to_dict()


class RemoveRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


@history_router.get("/history/uploads")
def get_history_uploads(
    settings: SettingsDep, removed: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The uploads in the curated history, oldest first: live rows, stores, dates, superseded."""
    book = ledger.load(settings.warehouse_path / "curated")
    return {"uploads": [e.to_dict() for e in book.entries if removed or e.removed is None]}


@history_router.post("/history/uploads/{upload_id}/remove")
def remove_history_upload(
    upload_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH)],
    body: RemoveRequest,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Take an upload's rows out of the curated history (recorded: who, when, why); 404 if none."""
    curated = settings.warehouse_path / "curated"
    return ledger.remove(curated, upload_id, "job-server api", body.reason).to_dict()


@history_router.get("/series")
def get_series(settings: SettingsDep) -> dict[str, Any]:
    """The store and product ids in the curated history, for the dashboard's pickers, and their
    latest names (`names`: {"stores": {id: name}, "products": {id: name}})."""
    found = series_ids(curated_root(settings.warehouse_path))
    dimension = names.load(settings.warehouse_path / "curated")
    return {
        "stores": found.stores,
        "products": found.products,
        "names": {
            "stores": {i: dimension.name_of("stores", i) for i in found.stores},
            "products": {i: dimension.name_of("products", i) for i in found.products},
        },
    }


def resolve_series(
    settings: Settings, store: str, product: str
) -> tuple[names.Resolved, names.Resolved]:
    """The store and product ids a person typed, as ids or as names (sales.names: an ambiguous
    or misspelt name is refused with the closest names)."""
    dimension = names.load(settings.warehouse_path / "curated")
    return dimension.resolve("stores", store.strip()), dimension.resolve(
        "products", product.strip()
    )
