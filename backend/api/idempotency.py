"""`Idempotency-Key` on POST /runs and POST /evaluations (the IETF httpapi draft, as Stripe uses it).

A client that retries a submission (a time-out, a dropped connection) sends the same key: the
first request creates the job, a repeat with the same body gets that job back with 200 instead of
a duplicate, and the same key with another body is a 409. Keys are remembered on the job row
(studio/jobs.py), so they hold across API processes and restarts; two requests racing with one
key are settled by the database's unique index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from studio import jobs
from studio.models import Job, JobKind

IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Any unique string (e.g. a UUID) per submission: repeating the request with the same key and "
                "body returns the first result (200) instead of creating a duplicate; another body → 409.")]

RESPONSES = {200: {"description": "repeated request (same Idempotency-Key and body): the job it created"},
             409: {"description": "the Idempotency-Key was used for a different request"}}


def idempotency_of(key: str | None, body: BaseModel) -> jobs.Idempotency | None:
    if key is None:
        return None
    if not key.strip() or not key.isprintable():
        raise HTTPException(422, detail="Idempotency-Key must be a non-empty printable string")
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return jobs.Idempotency(key, hashlib.sha256(canonical.encode()).hexdigest())


def submit_once(session: Session, idem: jobs.Idempotency | None, kind: JobKind,
                create: Callable[[], Job]) -> tuple[Job, bool]:
    """(job, created): `create()` (insert + commit) unless a request with the same key already did."""
    if idem is not None and (job := _earlier(session, idem, kind)) is not None:
        return job, False
    try:
        return create(), True
    except IntegrityError:
        session.rollback()
        if idem is None or (job := _earlier(session, idem, kind)) is None:
            raise
        return job, False  # a concurrent request with the same key committed first


def _earlier(session: Session, idem: jobs.Idempotency, kind: JobKind) -> Job | None:
    try:
        return jobs.job_for_idempotency_key(session, idem, kind)
    except jobs.IdempotencyConflict as exc:
        raise HTTPException(409, detail=str(exc)) from None
