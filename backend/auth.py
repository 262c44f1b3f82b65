"""Bearer-token auth: write endpoints need a token from REMIX_API_TOKENS; tokens listed in
REMIX_READONLY_TOKENS may only read (403 on writes). Reads are open unless REMIX_AUTH_READS=true.

The embedded default (`remix studio`) creates one write token on first start, stores it in
<data dir>/api_token (mode 600) and prints it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from studio.settings import Settings, get_settings

TOKEN_FILE = "api_token"

bearer_scheme = HTTPBearer(auto_error=False, description="API token (REMIX_API_TOKENS / <data dir>/api_token)")


def _matches(token: str, allowed: list[str]) -> bool:
    # constant-time comparison against every configured token
    found = False
    for candidate in allowed:
        if hmac.compare_digest(token.encode(), candidate.encode()):
            found = True
    return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def token_role(token: str, settings: Settings) -> str | None:
    if _matches(token, settings.write_tokens):
        return "write"
    if _matches(token, settings.read_tokens):
        return "read"
    return None


async def require_write(creds: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> str:
    settings = get_settings()
    if creds is None or not creds.credentials:
        raise _unauthorized("this endpoint needs an API token: send 'Authorization: Bearer <token>'")
    role = token_role(creds.credentials, settings)
    if role == "write":
        return role
    if role == "read":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this token is read-only; writing needs a token from REMIX_API_TOKENS")
    raise _unauthorized("invalid API token")


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


# Reads take the header from the request rather than through `bearer_scheme`, so that OpenAPI does
# not mark the open GETs as needing a token (backend/app.py marks them when REMIX_AUTH_READS=true).
async def require_read(request: Request) -> str | None:
    settings = get_settings()
    if not settings.auth_reads:
        return None
    token = _bearer_token(request)
    if token is None:
        raise _unauthorized("reading needs an API token (REMIX_AUTH_READS=true): send 'Authorization: Bearer <token>'")
    role = token_role(token, settings)
    if role is None:
        raise _unauthorized("invalid API token")
    return role


async def token_holder(request: Request) -> bool:
    """Whether the request carries a valid token (read or write). Without one, reads show no
    absolute paths, worker hosts/PIDs or tracebacks (backend/api/schemas.py); an invalid token on
    an open read is treated as none, as before."""
    token = _bearer_token(request)
    return token is not None and token_role(token, get_settings()) is not None


def ensure_embedded_token(data_dir: Path) -> tuple[str, bool]:
    """Return the token stored in <data_dir>/api_token, creating it first if needed; (token, created)."""
    path = data_dir / TOKEN_FILE
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token, False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = "remix_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True
