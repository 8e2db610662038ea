"""The shared bearer token that every service checks and every client sends."""

from __future__ import annotations

import hmac
import os
import secrets

from salesflow.config import Settings

__all__ = ["auth_headers", "load_or_create_token", "token_matches"]

TOKEN_FILE = "auth-token"  # noqa: S105 - a file name, not a secret


def load_or_create_token(settings: Settings) -> str | None:
    """The configured token, else the one in the data folder (created 0600 on first use); None if off."""
    if not settings.auth_enabled:
        return None
    if settings.auth_token is not None:
        return settings.auth_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{TOKEN_FILE}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        try:
            # link() fails if the name exists: when two services start together, the first token
            # wins whole and both read it; nobody ever sees a half-written file.
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_text().strip()


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    if expected is None:
        return True
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer ") :].encode(), expected.encode())


def auth_headers(settings: Settings) -> dict[str, str]:
    """Headers a salesflow client sends to a salesflow service."""
    token = load_or_create_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}
