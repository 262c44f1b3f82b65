"""The FastAPI application: REST API under /api/v1, OpenAPI at /openapi.json, docs at /docs.

Run it through `remix studio` (migrations, token, worker included) or, for the scale-out setup,
`uvicorn --factory backend.app:create_app` behind the usual process manager.

The dashboard (frontend/, built separately) is served when its folders exist:
  /static/...            → frontend/static/...
  /                      → frontend/templates/index.html
  /<page>                → frontend/templates/<page>.html
  /<page>/<item>         → frontend/templates/<page>_detail.html (or <page>.html), with `item_id` set
  /vendor/plotly.min.js  → the plotly.js bundled in the plotly Python package (no CDN)
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders

from backend.api.deps import API_PREFIX
from backend.api.read_cache import ReadCache
from studio.db import is_timeout
from studio.processes import die_with_parent
from studio.settings import Settings, get_settings

log = logging.getLogger("remix.api")
API_THREADS = 8  # threads for the sync routes (see lifespan)
# `remix studio --api-workers N` sets it to its pid for the API processes it spawns: each dies with it
# (SIGTERM, a graceful shutdown), so a kill -9 of the studio leaves no process holding the port.
API_PARENT_ENV = "REMIX_API_PARENT_PID"


class Reaper:
    """Background thread in the API process: re-queues jobs of dead workers (studio.jobs.reap)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        from studio.jobs import reap

        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                counts = reap(self.settings)
                if any(counts.values()):
                    log.warning("reaper: %s", counts)
            except Exception:  # the next pass retries
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _operation_id(route: APIRoute) -> str:
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


# Pages load scripts, styles and data from this origin only (plotly is served from /vendor);
# Plotly and the pages set inline style attributes, hence 'unsafe-inline' for styles alone.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


class SecurityHeaders:
    """Security headers on every response, and a content security policy on the studio's own pages
    (not on /docs and /redoc, which load Swagger UI / ReDoc from a CDN). A plain ASGI wrapper: it
    adds headers without buffering bodies the way BaseHTTPMiddleware does."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own_page = not scope["path"].startswith(("/docs", "/redoc"))

        async def send_with_headers(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if own_page and headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", PAGE_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


MAX_BODY_BYTES = 2 * 1024 * 1024  # a run config is a few KB; a leaderboard import a few hundred


class BodySizeLimit:
    """413 for a request body over MAX_BODY_BYTES, by its Content-Length or, without one, as the
    body streams in: an oversized request is never read into memory whole."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:  # noqa: ANN001
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        # No length (chunked): read up to the limit here, then hand the body on as it came.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():  # noqa: ANN202
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send) -> None:  # noqa: ANN001
        response = JSONResponse({"detail": f"request body over {self.max_bytes // 1024 // 1024} MiB"},
                                status_code=413)
        await response(scope, None, send)


async def _value_out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot hold (an id like 2**64 in a path, query or body) is the client's
    # input, not a server fault: SQLite refuses to bind it (OverflowError), PostgreSQL raises a
    # DataError (for integers, numeric_value_out_of_range). The detail has the documented 422 shape
    # (a list of {loc, msg, type}); which parameter it was is not known here.
    msg = "a value in the request is out of range for the database (ids and counts are at most 2^63-1)"
    return JSONResponse({"detail": [{"type": "value_error", "loc": ["request"], "msg": msg, "field": None}]},
                        status_code=422)


async def _query_timeout(request: Request, exc: Exception) -> JSONResponse:
    if not is_timeout(exc):
        raise exc
    return JSONResponse({"detail": "the query took longer than the studio allows (REMIX_QUERY_TIMEOUT_S); "
                                   "narrow the filters"}, status_code=503)


def create_app(settings: Settings | None = None) -> FastAPI:
    from backend.api.alerts import router as alerts_router
    from backend.api.config import router as config_router
    from backend.api.eval_compare import router as eval_compare_router
    from backend.api.evaluations import router as evaluations_router
    from backend.api.leaderboard import router as leaderboard_router
    from backend.api.rollouts import router as rollouts_router
    from backend.api.runs import router as runs_router
    from backend.api.system import router as system_router
    from backend.api.tokens import router as tokens_router

    settings = settings or get_settings()
    parent = os.environ.get(API_PARENT_ENV)
    if parent and multiprocessing.parent_process() is not None:  # one of the studio's API processes
        die_with_parent(signal.SIGTERM, int(parent))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if not settings.write_tokens:
            log.warning("REMIX_API_TOKENS is empty: every write endpoint will answer 401")
        # Everything imported and built so far lives as long as the process: out of the cyclic
        # GC's reach, a full collection (every few requests that build thousands of objects, e.g.
        # the off-policy view) no longer walks it -- ~80 ms pauses on this 2-core machine.
        gc.freeze()
        # Few threads for the sync routes: a read takes a few milliseconds of CPU, so more threads
        # add no throughput on a few cores, only contenders for the GIL -- with anyio's 40, the 4
        # write threads (deps.py) got so little of it that submissions timed out under a read load.
        # 100 submitters + 200 readers on 2 cores, 2 API processes: 24 threads gave 15-21 writes/s
        # (p95 7-9 s, close to clients' 10 s time-out), 8 gave 31-34/s (p95 4 s) for the same reads.
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        reaper = Reaper(settings) if settings.reaper_enabled else None
        if reaper is not None:
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()

    started_at = time.monotonic()
    # FastAPI's native OpenTelemetry asks the global tracer, meter and logger providers on every
    # request whether anyone configured them (environment look-ups, ~3% of the API's CPU under
    # load). The studio configures none; with OTEL_* variables set (opentelemetry-instrument) it
    # stays on.
    telemetry = None if any(k.startswith("OTEL_") for k in os.environ) else {"tracing": False, "metrics": False,
                                                                              "logs": False}
    app = FastAPI(
        title="ReMix Studio API",
        version="1",
        description="Submit ReMix/GRPO/PPO training runs, follow them live, inspect rollouts and off-policy reuse. "
                    "Write endpoints need `Authorization: Bearer <token>`.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        telemetry=telemetry,
    )
    app.state.started_at = started_at  # /health: `starting` within REMIX_WORKER_START_GRACE_S of this
    app.state.read_cache = ReadCache()  # the hot GET reads (backend/api/read_cache.py)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodySizeLimit)
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(OverflowError, _value_out_of_range)
    app.add_exception_handler(sqlalchemy.exc.DataError, _value_out_of_range)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _query_timeout)
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(runs_router)
    api.include_router(rollouts_router)
    api.include_router(alerts_router)
    api.include_router(tokens_router)
    api.include_router(system_router)
    api.include_router(eval_compare_router)  # before evaluations_router: /evaluations/compare, not /{eval_id}
    api.include_router(evaluations_router)
    api.include_router(leaderboard_router)
    api.include_router(config_router)
    app.include_router(api)
    if settings.auth_reads:
        _mark_reads_as_closed(app)
    _mount_frontend(app, settings.frontend_dir)
    return app


def _mark_reads_as_closed(app: FastAPI) -> None:
    """REMIX_AUTH_READS=true: the GETs need a token too, so OpenAPI says so. (Reads check the token
    without the security scheme, so that open reads are not marked by default; backend/auth.py.)"""
    from backend.api.deps import ERRORS

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema
            for item in schema["paths"].values():
                if (op := item.get("get")) is not None:
                    op["security"] = [{"HTTPBearer": []}]
                    op["responses"].setdefault("401", {"description": ERRORS[401]})
        return app.openapi_schema

    app.openapi = openapi


def _mount_frontend(app: FastAPI, frontend_dir: Path) -> None:
    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        try:
            import plotly
        except ImportError:
            raise HTTPException(404, detail="plotly is not installed") from None
        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        if not path.is_file():
            raise HTTPException(404, detail="plotly.min.js not found in the plotly package")
        return FileResponse(path, media_type="application/javascript")

    static_dir = frontend_dir / "static"
    if static_dir.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    templates_dir = frontend_dir / "templates"
    if not templates_dir.is_dir():
        return
    from fastapi.templating import Jinja2Templates

    templates = Jinja2Templates(directory=str(templates_dir))

    def render(request: Request, name: str, **context) -> HTMLResponse:
        if not (templates_dir / name).is_file():
            raise HTTPException(404, detail=f"page not found: {request.url.path}")
        from remix_engine.config import PRESETS  # noqa: PLC0415 - the engine's list, not a copy of it

        return templates.TemplateResponse(request, name, {"api_base": API_PREFIX, "presets": list(PRESETS), **context})

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return render(request, "index.html")

    @app.get("/{page}", include_in_schema=False, response_class=HTMLResponse)
    def page(request: Request, page: str) -> HTMLResponse:
        if not page.replace("-", "_").isidentifier():
            raise HTTPException(404, detail="page not found")
        return render(request, f"{page}.html", page=page)

    @app.get("/{page}/{item_id}", include_in_schema=False, response_class=HTMLResponse)
    def detail(request: Request, page: str, item_id: str) -> HTMLResponse:
        if not page.replace("-", "_").isidentifier():
            raise HTTPException(404, detail="page not found")
        name = f"{page}_detail.html" if (templates_dir / f"{page}_detail.html").is_file() else f"{page}.html"
        return render(request, name, page=page, item_id=item_id)


def __getattr__(name: str):
    # `uvicorn backend.app:app` works too (settings read when first accessed)
    if name == "app":
        return create_app()
    raise AttributeError(name)
