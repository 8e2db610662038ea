"""Forwarding the page's API calls to the upload service and the job server, token added here.

Only a few request headers go upstream (never the browser's cookie) and only a few response headers
come back (never an auth header), so the service token stays on the server. Bodies stream both
ways: an upload goes through without being held in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from salesflow.services.http import CLIENT_CLOSED, error_body

__all__ = ["Upstream", "UpstreamError"]

log = logging.getLogger(__name__)

#: Request headers passed upstream; Content-Length lets the upload service refuse a too-large
#: file before reading it.
_REQUEST_HEADERS = ("content-type", "content-length", "accept")
#: Response headers passed back to the browser.
_RESPONSE_HEADERS = (
    "content-type",
    "content-disposition",
    "retry-after",
    "x-model-version",
    "x-row-count",
)


class UpstreamError(Exception):
    """An upstream service could not be asked; `response` is what the browser gets instead."""

    def __init__(self, response: Response) -> None:
        super().__init__("upstream unavailable")
        self.response = response


class Upstream:
    """One salesflow service behind the dashboard: its name, its client and the shared token."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(
        self,
        request: Request,
        path: str,
        *,
        body: bool = False,
        read_timeout_s: float | None = None,
    ) -> Response:
        """Send the browser's request to `path` upstream and stream the answer back."""
        headers = {k: v for k in _REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        if not body:
            headers.pop("content-length", None)
            headers.pop("content-type", None)
        timeout = httpx.Timeout(self.timeout_s, read=read_timeout_s or self.timeout_s)
        upstream = self._client.build_request(
            request.method,
            path,
            params=list(request.query_params.multi_items()),
            headers=headers,
            content=request.stream() if body else None,
            timeout=timeout,
        )
        try:
            response = await self._send(upstream)
        except ClientDisconnect:
            log.info("the browser went away during a request to the %s", self.name)
            return Response(status_code=CLIENT_CLOSED)
        except UpstreamError as exc:
            return exc.response
        return StreamingResponse(
            response.aiter_bytes(),
            status_code=response.status_code,
            headers={k: v for k in _RESPONSE_HEADERS if (v := response.headers.get(k))},
            background=BackgroundTask(response.aclose),
        )

    async def get_json(
        self, path: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of a GET; UpstreamError when the service cannot be asked."""
        request = self._client.build_request(
            "GET", path, params=params, timeout=timeout_s or self.timeout_s
        )
        response = await self._send(request)
        try:
            await response.aread()
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, None
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise UpstreamError(
                _unavailable(f"the {self.name} did not answer in time; retry in a moment")
            ) from None
        except httpx.TransportError as exc:
            log.warning("cannot reach the %s: %s", self.name, type(exc).__name__)
            raise UpstreamError(_unavailable(f"the {self.name} is not reachable")) from None
        if response.status_code == 401:
            # The browser's session is fine; the dashboard's token is not. A 401 would make the
            # page ask the user to log in again, which would not help.
            await response.aclose()
            log.error("the %s refused the dashboard's token", self.name)
            raise UpstreamError(
                JSONResponse(
                    error_body(
                        "upstream_auth",
                        f"the {self.name} refused the dashboard's token: start the dashboard "
                        "with the same settings (token) as the other services",
                    ),
                    status_code=502,
                )
            )
        return response


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(
        error_body("unavailable", message), status_code=503, headers={"Retry-After": "2"}
    )
