"""`JobServerClient`: the job server's HTTP API as Python calls, with salesflow's error tree.

Connection errors, timeouts and 5xx answers raise UnavailableError (retry later); 404 raises
NotFoundError; other 4xx raise InputError, with the server's message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import (
    BusyError,
    ConfigurationError,
    InputError,
    NotFoundError,
    SalesflowError,
    UnavailableError,
)

__all__ = ["JobServerClient"]

#: How often wait() polls a job.
POLL_INTERVAL_S = 0.5
#: A synchronous prediction is Spark work (loading a model, a small job): seconds when warm, but
#: a minute or more on a busy machine, so it gets its own read timeout instead of http_timeout_s.
PREDICT_TIMEOUT_S = 300.0


def _message(response: httpx.Response) -> tuple[str, str]:
    """The (code, message) of an error answer, whatever its shape."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", response.text[:300]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, message = _message(response)
    status = response.status_code
    text = f"job server answered {status}: {message or response.reason_phrase}"
    error: SalesflowError
    if status == 503 and code == "busy":
        error = BusyError(text)
    elif status >= 500:
        error = UnavailableError(text)
    elif status == 404:
        error = NotFoundError(text)
    elif status in (401, 403):
        error = ConfigurationError(text + " (check the auth token setting)")
    else:
        error = InputError(text)
    if code:
        error.code = code
    raise error


class JobServerClient:
    """Calls to the job server at settings.job_server_url, authenticated with the service token."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._http = httpx.Client(
            base_url=settings.job_server_url,
            headers=auth_headers(settings),
            timeout=settings.http_timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JobServerClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """httpx's timeouts and transport errors as UnavailableError, naming the job server."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"job server timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"job server unreachable at {self.settings.job_server_url}: {type(exc).__name__}"
            ) from exc

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            response = self._http.request(method, url, **kwargs)
        _raise_for(response)
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._request(method, url, **kwargs).json()

    # --- jobs ----------------------------------------------------------------------------------

    def train(
        self, upload_id: str, sha256: str | None = None, mode: str | None = None
    ) -> dict[str, Any]:
        """Ask for the training of an upload: the job (`created` False if it already existed);
        `mode` is its history mode (None: the job server's setting)."""
        body: dict[str, Any] = {"upload_id": upload_id, "sha256": sha256}
        if mode is not None:
            body["mode"] = mode
        result: dict[str, Any] = self._json("POST", "/train", json=body)
        return result

    def retrain(self, upload_id: str) -> dict[str, Any]:
        """Replay a past upload: a new train job on its stored file (a new model version)."""
        result: dict[str, Any] = self._json(
            "POST", "/train", json={"upload_id": upload_id, "replay": True}
        )
        return result

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job."""
        result: dict[str, Any] = self._json("GET", f"/jobs/{job_id}")
        return result

    def jobs(
        self, upload_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if upload_id is not None:
            params["upload_id"] = upload_id
        if status is not None:
            params["status"] = status
        result: list[dict[str, Any]] = self._json("GET", "/jobs", params=params)["jobs"]
        return result

    def job_for_upload(self, upload_id: str) -> dict[str, Any] | None:
        """The train job of an upload, or None if the job server has none."""
        found = self.jobs(upload_id=upload_id, limit=1)
        return found[0] if found else None

    def wait(self, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Poll a job until it succeeds or fails; UnavailableError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in ("succeeded", "failed"):
                return job
            if time.monotonic() > deadline:
                raise UnavailableError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(POLL_INTERVAL_S)

    def job_output(self, job_id: str) -> bytes:
        """The CSV written by a succeeded predict job."""
        return self._request("GET", f"/jobs/{job_id}/output").content

    # --- predictions ---------------------------------------------------------------------------

    def predict_csv(
        self,
        path: Path,
        model: str | None = None,
        accept_json: bool = False,
        per_month: bool = False,
    ) -> bytes | dict[str, Any]:
        """Predict a sales CSV: one row per input row (`per_month`: per store/product/month).

        Returns the CSV bytes (small file), the JSON answer (small file, `accept_json`), or the
        predict job (a dict with `job_id`; large file: `wait()` for it, then `job_output()`).
        """
        params: dict[str, str] = {"model": model} if model else {}
        if per_month:
            params["per_month"] = "true"
        headers = {"Accept": "application/json" if accept_json else "text/csv"}
        with Path(path).open("rb") as handle:
            response = self._request(
                "POST",
                "/predict",
                params=params,
                headers=headers,
                files={"file": (Path(path).name, handle, "text/csv")},
                timeout=httpx.Timeout(self.settings.http_timeout_s, read=PREDICT_TIMEOUT_S),
            )
        if response.status_code == 202 or accept_json:
            result: dict[str, Any] = response.json()
            return result
        return response.content

    # --- forecasts -----------------------------------------------------------------------------

    def forecast(
        self,
        store_id: str,
        product_id: str,
        *,
        month: str | None = None,
        date: str | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """One forecast (give `month` YYYY-MM or `date` YYYY-MM-DD): `{"answers": [one], ...}`."""
        params = {"store_id": store_id, "product_id": product_id}
        params.update({k: v for k, v in (("month", month), ("date", date), ("model", model)) if v})
        result: dict[str, Any] = self._json("GET", "/forecast", params=params)
        return result

    def forecast_many(
        self, queries: list[dict[str, str]], model: str | None = None
    ) -> dict[str, Any]:
        """Up to 10,000 queries ({store_id, product_id, month | date}) answered by one model."""
        body: dict[str, Any] = {"queries": queries}
        if model:
            body["model"] = model
        result: dict[str, Any] = self._json("POST", "/forecast", json=body)
        return result

    def export_forecasts(
        self,
        target: Path,
        *,
        months: int | None = None,
        fmt: str = "csv",
        model: str | None = None,
    ) -> dict[str, str]:
        """Save every series' forecasts for the next `months` (server default: 12, or a forecast
        table's fewer) to `target` as CSV or Parquet; the model version, row count and file."""
        params: dict[str, Any] = {"format": fmt}
        params.update({k: v for k, v in (("months", months), ("model", model)) if v})
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        timeout = httpx.Timeout(self.settings.http_timeout_s, read=PREDICT_TIMEOUT_S)
        try:
            with (
                self._reaching(),
                self._http.stream(
                    "GET", "/forecast/export", params=params, timeout=timeout
                ) as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                found = {
                    "model_version": response.headers.get("x-model-version", ""),
                    "rows": response.headers.get("x-row-count", ""),
                }
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return {**found, "path": str(target)}

    # --- models --------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """`{"active": month version | None, "active_by_granularity": {...}, "models": [...],
        "history": [...]}`: versions newest first, the last activations oldest first."""
        result: dict[str, Any] = self._json("GET", "/models")
        return result

    def coherence(self, version: str = "active") -> dict[str, Any]:
        """A day model's day-vs-month coherence check (`active`: the active day model's)."""
        path = f"/models/{quote(version, safe='')}/coherence"  # an id never reaches another route
        result: dict[str, Any] = self._json("GET", path)
        return result

    def activate(self, version: str, reason: str | None = None) -> dict[str, Any]:
        """Make a model version the active one."""
        body = {"reason": reason} if reason else None
        result: dict[str, Any] = self._json("POST", f"/models/{version}/activate", json=body)
        return result

    # --- the curated history -------------------------------------------------------------------

    def history(
        self,
        store_id: str = "all",
        product_id: str = "all",
        *,
        granularity: str = "month",
        days: int | None = None,
    ) -> dict[str, Any]:
        """Actuals of one store/product ("all": totals): `months` [{month, quantity}], or with
        granularity "day" `days` [{date, quantity}] (the last `days` of them)."""
        params: dict[str, Any] = {
            "store_id": store_id,
            "product_id": product_id,
            "granularity": granularity,
        }
        if days is not None:
            params["days"] = days
        result: dict[str, Any] = self._json("GET", "/history", params=params)
        return result

    def series(self) -> dict[str, Any]:
        """`{"stores": [...], "products": [...], "names": {"stores": {id: name}, ...}}`: the ids
        in the curated history and their latest names."""
        result: dict[str, Any] = self._json("GET", "/series")
        return result

    def healthy(self) -> bool:
        """Whether the job server answers /healthz."""
        try:
            self._request("GET", "/healthz")
        except SalesflowError:
            return False
        return True
