"""The Python client of the upload service, used by the CLI, the consumer and the job server.

Uploads stream from disk as a hand-built multipart body (constant memory, exact Content-Length so
the server can refuse an oversized file before reading it). Errors map back onto the error tree:
connection failures, timeouts and 5xx -> UnavailableError; 4xx -> the matching InputError /
NotFoundError with the server's message.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from salesflow import errors
from salesflow.auth import auth_headers
from salesflow.config import Settings

__all__ = ["UploadClient"]

#: Bytes read from disk per chunk of the request body.
CHUNK_SIZE = 1024 * 1024
#: After the last byte is sent the server still commits (fsync / S3 complete) before answering.
UPLOAD_READ_TIMEOUT_S = 300.0


def _tree(root: type[errors.SalesflowError]) -> list[type[errors.SalesflowError]]:
    """`root` and every class under it in the error tree."""
    return [root, *(c for sub in root.__subclasses__() for c in _tree(sub))]


#: The server's error codes as the domain errors they name: the CLI shows the same code as HTTP
#: (`no_rows`, `not_utf8`, ...), never a generic one.
_BY_CODE: dict[str, type[errors.SalesflowError]] = {c.code: c for c in _tree(errors.SalesflowError)}


class UploadClient:
    """Talks to the upload service at settings.upload_service_url with the shared token."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._http = httpx.Client(
            base_url=settings.upload_service_url,
            headers=auth_headers(settings),
            timeout=settings.http_timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UploadClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def upload(
        self,
        path: Path | str,
        *,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Stream a CSV file to the service; the upload record (`duplicate` says if it was known).

        `progress(bytes_sent)` is called with the running total of file bytes sent; `mode` is
        the upload's history mode (replace, append, reject; None: the setting).
        """
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise errors.InputError(f"cannot read {path.name!r}: {exc.strerror}") from None
        boundary = secrets.token_hex(16)
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{_quote(path.name)}"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            with path.open("rb") as src:
                while chunk := src.read(CHUNK_SIZE):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent)
            yield tail

        return self._call(
            "POST",
            "/uploads",
            params=({"force": "true"} if force else {}) | ({"mode": mode} if mode else {}) or None,
            content=body(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
            timeout=httpx.Timeout(
                self.settings.http_timeout_s,
                read=max(self.settings.http_timeout_s, UPLOAD_READ_TIMEOUT_S),
            ),
        )

    def get(self, upload_id: str) -> dict[str, Any]:
        """One upload's record."""
        return self._call("GET", f"/uploads/{upload_id}")

    def list(self, *, limit: int = 100, status: str | None = None) -> list[dict[str, Any]]:
        """Uploads, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        uploads: list[dict[str, Any]] = self._call("GET", "/uploads", params=params)["uploads"]
        return uploads

    def report_status(self, upload_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Report a consumer/job status (job_id, model_version, metrics, error_code, error)."""
        return self._call("POST", f"/uploads/{upload_id}/status", json={"status": status, **fields})

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise errors.UnavailableError("the upload service did not answer in time") from None
        except httpx.TransportError as exc:
            raise errors.UnavailableError(
                f"cannot reach the upload service at {self.settings.upload_service_url}: "
                f"{type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            raise _error_of(response)
        result: dict[str, Any] = response.json()
        return result


def _quote(filename: str) -> str:
    """A filename safe inside a quoted Content-Disposition parameter."""
    cleaned = "".join(ch for ch in filename if ch >= " " and ch != "\x7f")
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')


def _error_of(response: httpx.Response) -> errors.SalesflowError:
    """The domain error of an error response."""
    try:
        detail = response.json().get("error", {})
        code, message = str(detail.get("code", "")), str(detail.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "", response.text[:500]
    message = message or f"HTTP {response.status_code}"
    kind = _BY_CODE.get(code)
    if kind is not None:
        return kind(message)
    if response.status_code >= 500:
        return errors.UnavailableError(f"the upload service failed: {message}")
    error: errors.SalesflowError = (
        errors.NotFoundError(message) if response.status_code == 404 else errors.InputError(message)
    )
    if code:
        error.code = code  # a code this client does not know yet still reaches the user
    return error
