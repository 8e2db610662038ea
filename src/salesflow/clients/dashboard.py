"""The dashboard as seen from the command line: where it listens and a one-time login link.

The link carries a short-lived, single-use code the dashboard issues to whoever holds the service
token (sent in a header); the token itself never appears in a URL.
"""

from __future__ import annotations

import httpx

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import UnavailableError

__all__ = ["dashboard_url", "login_link"]

#: The dashboard answers a code request at once; a busy machine gets a few seconds.
LINK_TIMEOUT_S = 5.0


def dashboard_url(settings: Settings) -> str:
    """Where the dashboard listens."""
    return f"http://{settings.host}:{settings.dashboard_port}"


def login_link(settings: Settings, timeout_s: float = LINK_TIMEOUT_S) -> str:
    """A one-time login link from the running dashboard (valid a few minutes, for one browser)."""
    base = dashboard_url(settings)
    if not settings.auth_enabled:
        return f"{base}/"
    try:
        response = httpx.post(
            f"{base}/login-codes", headers=auth_headers(settings), timeout=timeout_s
        )
    except httpx.HTTPError:
        raise UnavailableError(
            f"the dashboard at {base} is not answering: start it with `salesflow up`"
        ) from None
    if response.status_code != 200:
        raise UnavailableError(
            f"the dashboard at {base} gave no login code (HTTP {response.status_code}): "
            "is it running with the same token (settings) as this command?"
        )
    return str(response.json()["url"])
