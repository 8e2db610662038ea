"""Refuse before reading: the limits every salesflow HTTP service applies before a route runs.

Two layers, each refusing in the one coded error shape and closing the connection:

* `guarded_protocol`: uvicorn's httptools protocol with a size limit on a request's head (431 once
  it is over the limit, after one read of at most 256 KiB; httptools itself has no limit and would
  buffer a header of any size) and a deadline for the whole head (408: a client trickling its
  header never reaches a route).
* `RequestGuard`: ASGI middleware that checks the bearer token before a byte of the body is read
  (401), refuses a declared Content-Length above the route's body limit (413) and counts the body
  as it is read (413 beyond the limit, also for chunked bodies), and cuts a body that arrives below a
  minimum rate over a window (408), so trickling clients release their upload slots.

FastAPI parses a JSON or form body before it resolves a route's dependencies (the token check
among them), which is why the token is checked here and not only in `protected`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from salesflow import errors
from salesflow.auth import token_matches

__all__ = ["PUBLIC_PATHS", "RequestGuard", "guarded_protocol"]

log = logging.getLogger(__name__)

#: Paths answered without a token: the probes and the API's own description.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"})
_DISCONNECT: Message = {"type": "http.disconnect"}


def _error_bytes(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _too_long_head(limit: int) -> str:
    return f"the request line and headers are over {limit} bytes; send smaller headers"


def guarded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a head size limit (431) and a head deadline (408)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return  # refused: nothing more is read
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_header_bytes:
                self._refuse(431, "header_too_large", _too_long_head(max_header_bytes))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_head:  # the next request on a kept-alive connection
                self._start_head()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_head_timer()
            # A head read in one go is within the read size; its parsed size is what counts.
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > max_header_bytes:
                self._refuse(431, "header_too_large", _too_long_head(max_header_bytes))
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.transport.is_closing():
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self.transport.is_closing():
                super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():
                super().send_400_response(msg)

        def _start_head(self) -> None:
            self._in_head, self._head_bytes = True, 0
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head:
                self._refuse(
                    408,
                    "header_timeout",
                    f"the request's headers did not arrive within {header_timeout_s:g} s",
                )

        def _refuse(self, status: int, code: str, message: str) -> None:
            if self.transport.is_closing():
                return
            self._in_head = False
            self._stop_head_timer()
            log.warning("refused a request from %s: %s", self.client, message)
            body = _error_bytes(code, message)
            head = (
                STATUS_LINE[status]
                + b"content-type: application/json\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(head + body)
            self.transport.close()

    return GuardedHttpToolsProtocol


class RequestGuard:
    """ASGI middleware: the token before the body (401), body limits (413), a minimum body rate (408).

    `body_limits` maps (method, path) to that route's limit; every other request may send at most
    `default_limit` bytes (the JSON endpoints). `token` None turns the token check off.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        default_limit: int,
        body_limits: Mapping[tuple[str, str], int],
        min_rate_bytes_s: float,
        rate_window_s: float,
    ) -> None:
        self.app = app
        self.token = token
        self.default_limit = default_limit
        self.body_limits = dict(body_limits)
        self.min_rate_bytes_s = min_rate_bytes_s
        self.rate_window_s = rate_window_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path, method = scope["path"], scope["method"]
        if (
            self.token is not None
            and path not in PUBLIC_PATHS
            and not token_matches(self.token, headers.get("authorization"))
        ):
            await _answer(send, errors.UnauthorizedError("missing or wrong bearer token"))
            return
        limit = self.body_limits.get((method, path), self.default_limit)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, _too_large(limit))
            return
        body = _GuardedBody(receive, send, limit, self.min_rate_bytes_s, self.rate_window_s)
        await self.app(scope, body.receive, body.send)


def _too_large(limit: int) -> errors.TooLargeError:
    return errors.TooLargeError(f"the request body is larger than this endpoint's {limit} bytes")


async def _answer(send: Send, exc: errors.SalesflowError) -> None:
    """Answer with `exc` in the one error shape, and close the connection (the body is unread)."""
    body = _error_bytes(exc.code, str(exc))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if exc.http_status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _GuardedBody:
    """One request's receive/send pair: counts the body, watches its rate, answers a refusal."""

    def __init__(
        self, receive: Receive, send: Send, limit: int, min_rate: float, window_s: float
    ) -> None:
        self._receive, self._send = receive, send
        self.limit, self.min_rate, self.window_s = limit, min_rate, window_s
        self.total = 0
        self.window_bytes = 0
        self.waited = 0.0  # seconds spent waiting for the client in the current window
        self.body_done = False
        self.started = False
        self.refused = False

    async def receive(self) -> Message:
        while not self.refused:
            if self.body_done:  # e.g. a streaming response listening for a disconnect
                return await self._receive()
            message: Message | None = None
            began = time.monotonic()
            with anyio.move_on_after(max(self.window_s - self.waited, 0.0)):
                message = await self._receive()
            self.waited += time.monotonic() - began
            if message is not None and message["type"] == "http.request":
                size = len(message.get("body", b""))
                self.total += size
                self.window_bytes += size
                self.body_done = not message.get("more_body", False)
                if self.total > self.limit:
                    await self._refuse(_too_large(self.limit))
                    break
            if self.waited >= self.window_s:
                if not self.body_done and self.window_bytes < self.min_rate * self.window_s:
                    await self._refuse(
                        errors.BodyTimeoutError(
                            f"the body arrived at under {self.min_rate:g} bytes/s over "
                            f"{self.window_s:g} s; the request was cut"
                        )
                    )
                    break
                self.waited, self.window_bytes = 0.0, 0
            if message is not None:
                return message
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the route's answer to the disconnect it was handed
        self.started = True
        await self._send(message)

    async def _refuse(self, exc: errors.SalesflowError) -> None:
        log.warning("request refused while reading its body: %s", exc)
        self.refused = True
        if not self.started:
            await _answer(self._send, exc)
