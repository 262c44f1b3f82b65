"""Shared FastAPI dependencies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute
from sqlmodel import Session

from backend.auth import require_write, token_holder
from studio.db import autocommit_engine, get_engine
from studio.models import Run
from studio.paths import Refusal
from studio.settings import get_settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    # The routes close it themselves (SessionReleasingRoute); this closes it on any other path,
    # on the event loop rather than on a thread the routes may be waiting for.
    # Queries end after query_timeout_s (studio.db.limit_statements). GET routes only read: their
    # statements run without a transaction around them (studio.db.autocommit_engine).
    engine = autocommit_engine(get_engine()) if request.method in ("GET", "HEAD") else get_engine()
    with Session(engine, expire_on_commit=False, info={"timeout_s": get_settings().query_timeout_s}) as session:
        yield session


# Writes (submit, cancel, retry, delete, import) wait for one of a few slots on the event loop
# before they take an API thread: a burst of submissions, which serialise on the database's write
# lock anyway, then cannot occupy every thread and starve the dashboard's reads.
API_PREFIX = "/api/v1"  # where the routers are mounted (backend/app.py); links in responses start with it
WRITE_SLOTS = 4
_write_slots: asyncio.Semaphore | None = None


async def write_slot() -> AsyncIterator[None]:
    global _write_slots  # noqa: PLW0603 - created on the running loop
    if _write_slots is None:
        _write_slots = asyncio.Semaphore(WRITE_SLOTS)
    async with _write_slots:
        yield


WRITE = [Depends(require_write), Depends(write_slot)]
# A write that holds a slot runs on a thread of its own (WRITE_SLOTS of them, kept for the
# process's life): on the shared pool it queued behind every read waiting for a thread, and under a
# read-heavy load submissions timed out while the dashboard was served.
_write_threads = concurrent.futures.ThreadPoolExecutor(WRITE_SLOTS, thread_name_prefix="api-write")


# The error statuses a route can answer, described once for OpenAPI: `responses=errors(404, 409)`,
# or `(409, "what the conflict is")` for a route's own wording. tests/unit/test_studio_security.py
# checks that write routes list 401/403, routes with an id 404 and routes with a body 413/422
# (and a JSON body 400: UNREADABLE_BODY).
ERRORS = {
    400: "a query value this endpoint did not make (e.g. a foreign cursor)",
    401: "no or invalid API token (`Authorization: Bearer <token>`)",
    403: "a read-only token; writing needs a token from REMIX_API_TOKENS",
    404: "no such item",
    409: "conflicts with the item's current state",
    413: "request body over 2 MiB",
    422: "invalid input; `detail[].field` names the field",
}


def errors(*codes: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status, text = code if isinstance(code, tuple) else (code, ERRORS[code])
        out[status] = {"description": text}
    return out


WRITE_ERRORS = errors(401, 403)
# FastAPI answers 400 (not 422) to a JSON body it cannot decode at all (e.g. bytes that are not UTF-8)
UNREADABLE_BODY = (400, "a body that cannot be read as JSON text (e.g. not UTF-8)")


class SessionReleasingRoute(APIRoute):
    """Closes a route's database session as soon as its (sync) function returns.

    Without this the connection stays checked out until FastAPI's dependency teardown, which
    comes after the response model is validated -- and for a sync route that validation waits
    for a thread of the same pool the routes run on. Under load every thread then waited for a
    connection held by a request that waited for a thread: the API deadlocked at about 55
    concurrent requests (15 connections + 40 threads). Every route builds its response from
    plain values before returning, so nothing needs the session after that.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _closing_sessions(endpoint)
            if any(getattr(d, "dependency", None) is write_slot for d in kwargs.get("dependencies") or []):
                endpoint = _on_write_threads(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _closing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the signature through __wrapped__
    def run_then_close(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return run_then_close


def _on_write_threads(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)  # FastAPI reads the signature through __wrapped__, sees a coroutine
    async def run_on_write_thread(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(contextvars.copy_context().run, endpoint, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_write_threads, call)

    return run_on_write_thread


SessionDep = Annotated[Session, Depends(get_session)]
# True when the request carries a valid token: it may see absolute paths, workers and full errors.
FullView = Annotated[bool, Depends(token_holder)]


def get_run_or_404(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(404, detail=f"run {run_id} not found")
    return run


def refused(refusals: list[Refusal], loc: list[Any]) -> HTTPException:
    """422 naming each field the studio's path policy refused (studio/paths.py)."""
    return HTTPException(422, detail=[
        {"type": "policy_error", "loc": [*loc, *r.field.split(".")], "msg": r.message, "field": r.field}
        for r in refusals])
