"""A per-app cache of the hot GET reads' JSON (a run, its metrics, several runs' metrics, the run
list) that is never stale.

Each entry is stored under a *version*: a few values that one cheap query reads on every request
(the run row's state and updated_at, counts and maxima of the rows the response shows, the
checkpoint files' existence, the job's waiting reason). A request whose version equals the entry's
gets the stored bytes as they are: no ORM objects, response models, path scrubbing or JSON encoding,
and no second thread-pool hop for FastAPI's response validation. A write by anyone (this API
process, another one, a worker, the sink, a hand-made SQL update that changes what the version
reads) changes the version and the entry is rebuilt; the version is read before the body, so a
body is never older than the version it is stored under. Under constant writes an entry simply
misses: the cost is the version query on top of the usual build.

Keys name the route, its parameters and, where the route has a fuller view for token holders
(deps.FullView), that flag: a public request never gets a token holder's body.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import pydantic_core
from fastapi import Request, Response
from pydantic import BaseModel

MAX_BYTES = 64 * 1024 * 1024  # all bodies together, least recently used dropped first
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # bigger bodies (wide metric requests) are not kept


class ReadCache:
    def __init__(self, max_bytes: int = MAX_BYTES, max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        self.max_bytes, self.max_entry_bytes = max_bytes, max_entry_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # routes run on the API's thread pool
        self.hits = self.misses = 0

    def get(self, key: Hashable, version: Any) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, version: Any, body: bytes) -> None:
        if len(body) > self.max_entry_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[key] = (version, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)


def read_cache(request: Request) -> ReadCache:
    # per app (backend/app.py creates it): tests build several apps on several databases in one process
    return request.app.state.read_cache


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """`model`'s JSON (what its route's response_model gives), encoded on the route's own thread:
    for a sync route that returns a model, FastAPI validates and encodes it on a second trip through
    the thread pool, which under load doubles the request's wait for a thread."""
    return Response(pydantic_core.to_json(model), status_code=status_code, media_type="application/json")


def cached_json(request: Request, key: Hashable, version: Any, build: Callable[[], BaseModel]) -> Response:
    """The JSON of `build()` (the route's response model), from the cache while `version` holds.
    `version` must be read before `build` runs (then a concurrent write can only make the stored
    body newer than its version, which the next request's version check sees as a miss)."""
    cache = read_cache(request)
    body = cache.get(key, version)
    if body is None:
        body = pydantic_core.to_json(build())  # the bytes FastAPI's response_model serialisation gives
        cache.put(key, version, body)
    return Response(body, media_type="application/json")
