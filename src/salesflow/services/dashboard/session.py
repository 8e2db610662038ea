"""Browser sessions: a one-time login code trades for an HttpOnly cookie; a gate checks it.

The token never reaches the page nor a URL: the CLI (holding the service token) asks
`POST /login-codes` for a code, valid a few minutes and once, and prints `/login?code=...`. That
link keeps a random session id in memory and sets it as an HttpOnly, SameSite=Strict cookie. Every
route except the open ones needs that cookie: API calls get a 401 JSON answer, pages a redirect to
`/welcome`. A restart of the dashboard forgets every session and code (`salesflow login` prints a
new link).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from salesflow.services.http import error_body

__all__ = [
    "CODE_TTL_S",
    "COOKIE",
    "OPEN_PATHS",
    "SECURITY_HEADERS",
    "LoginCodes",
    "SessionGate",
    "SessionStore",
]

COOKIE = "salesflow_session"
#: A session lasts a working day; after that the link `salesflow up` printed logs in again.
SESSION_TTL_S = 12 * 3600
#: Sessions kept at most; the oldest is dropped first, so repeated logins cannot grow memory.
MAX_SESSIONS = 1000
#: A login code works once, within this long: enough to click the link `salesflow up` printed.
CODE_TTL_S = 300.0
#: Unused codes kept at most (the oldest dropped first).
MAX_CODES = 100
#: Paths served without a session: probes, the login link and the page that explains it.
#: The stylesheet is open too: the /welcome page uses it, and it holds nothing private.
OPEN_PATHS = frozenset(
    # /metrics: no session, the service token instead (Prometheus sends it as a bearer token)
    # /login-codes: the service token in a header, checked by the route
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/login",
        "/login-codes",
        "/welcome",
        "/favicon.ico",
        "/static/style.css",
    }
)

#: Sent with every answer: only our own scripts and styles, no framing, no referrer (the login URL
#: carries a code), no MIME sniffing.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TOKEN_IN_QUERY = re.compile(r"((?:token|code)=)[^&\s]*")


class SessionStore:
    """Session ids in memory with an expiry; thread-safe."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._expires: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def create(self) -> str:
        """A new random session id (256 bits), valid for `ttl_s`."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._expires[session_id] = time.monotonic() + self.ttl_s
            while len(self._expires) > self.max_sessions:
                self._expires.popitem(last=False)
        return session_id

    def valid(self, session_id: str | None) -> bool:
        """True for a known, unexpired session id."""
        if not session_id:
            return False
        with self._lock:
            expires = self._expires.get(session_id)
            if expires is None:
                return False
            if expires < time.monotonic():
                del self._expires[session_id]
                return False
            return True

    def drop(self, session_id: str | None) -> None:
        """Forget a session (log out)."""
        if session_id:
            with self._lock:
                self._expires.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._expires)


class LoginCodes(SessionStore):
    """One-time login codes: valid `ttl_s`, gone once redeemed."""

    def __init__(self, ttl_s: float = CODE_TTL_S, max_codes: int = MAX_CODES) -> None:
        super().__init__(ttl_s=ttl_s, max_sessions=max_codes)

    def redeem(self, code: str | None) -> bool:
        """True once for a known, unexpired code."""
        valid = self.valid(code)
        self.drop(code)
        return valid


class SessionGate:
    """ASGI middleware: session check, same-origin check for writes, security headers on answers."""

    def __init__(self, app: ASGIApp, sessions: SessionStore, *, required: bool = True) -> None:
        self.app = app
        self.sessions = sessions
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self._refusal(HTTPConnection(scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, conn: HTTPConnection) -> Response | None:
        """The answer for a request that may not go on, or None."""
        path = conn.url.path
        is_api = path.startswith("/api/") or path == "/api"
        if is_api and conn.scope["method"] in _UNSAFE_METHODS and not _same_origin(conn):
            return JSONResponse(
                error_body("cross_origin", "requests from other sites are refused"), 403
            )
        if not self.required or path in OPEN_PATHS or self.sessions.valid(conn.cookies.get(COOKIE)):
            return None
        if is_api:
            return JSONResponse(
                error_body(
                    "unauthorized",
                    "no dashboard session: open the link `salesflow up` printed",
                ),
                401,
            )
        return RedirectResponse("/welcome", status_code=303)


def _same_origin(conn: HTTPConnection) -> bool:
    """True unless the browser says the request comes from another origin (CSRF defence in depth)."""
    origin = conn.headers.get("origin")
    if origin is None:  # same-origin GETs and non-browser clients send none
        return True
    host = conn.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def redact_token(args: Any) -> Any:
    """uvicorn access-log arguments with any `token=` or `code=` query value replaced by `***`."""
    if not isinstance(args, tuple):
        return args
    return tuple(
        _TOKEN_IN_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg for arg in args
    )
