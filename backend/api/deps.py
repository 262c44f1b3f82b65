"""Shared FastAPI dependencies."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.routing import APIRoute
from sqlmodel import Session

from backend.auth import require_write, token_holder
from studio.db import get_engine
from studio.models import Run
from studio.paths import Refusal


async def get_session() -> AsyncIterator[Session]:
    # The routes close it themselves (SessionReleasingRoute); this closes it on any other path,
    # on the event loop rather than on a thread the routes may be waiting for.
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


# Writes (submit, cancel, retry, delete, import) wait for one of a few slots on the event loop
# before they take an API thread: a burst of submissions, which serialise on the database's write
# lock anyway, then cannot occupy every thread and starve the dashboard's reads.
WRITE_SLOTS = 4
_write_slots: asyncio.Semaphore | None = None


async def write_slot() -> AsyncIterator[None]:
    global _write_slots  # noqa: PLW0603 - created on the running loop
    if _write_slots is None:
        _write_slots = asyncio.Semaphore(WRITE_SLOTS)
    async with _write_slots:
        yield


WRITE = [Depends(require_write), Depends(write_slot)]


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
