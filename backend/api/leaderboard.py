"""/api/v1/leaderboard: published and measured rows side by side; json, csv, md and latex exports."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from backend.api.deps import WRITE, WRITE_ERRORS, SessionDep, SessionReleasingRoute, errors
from backend.auth import require_read
from backend.leaderboard_export import FORMATS, render
from studio.leaderboard import LeaderboardError, delete_entry, leaderboard, parse_import, store_entries

router = APIRouter(prefix="/leaderboard", tags=["leaderboard"], dependencies=[Depends(require_read)],
                   route_class=SessionReleasingRoute)

_EXT = {"json": "json", "csv": "csv", "md": "md", "latex": "tex"}
_MAX_IMPORT_BYTES = 2 * 1024 * 1024


def _bad(field: str, exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail=[{"type": "value_error", "loc": ["query", field], "msg": str(exc), "field": field}])


@router.get("", summary="The leaderboard for one decoding mode (json, csv, md or latex)",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "text/markdown": {},
                                         "application/x-latex": {}}},
                       **errors((422, "an unknown mode, source, sort, order or format; `detail[].field` names it"))})
def get_leaderboard(session: SessionDep,
                    size: str | None = Query(None, description="1.5B, 7B, ... or all (default)"),
                    mode: str = Query("greedy", description="greedy or t<temperature> (t0.1: the paper's sampled numbers)"),
                    source: Literal["all", "published", "measured"] = "all",
                    sort: str = Query("average", description="average, cost, model, source, size or a benchmark"),
                    order: Literal["asc", "desc"] = "desc",
                    format: Literal["json", "csv", "md", "latex"] = Query("json", description=", ".join(FORMATS)),
                    download: bool = Query(False, description="send as an attachment (json is inline by default)"),
                    ) -> Response:
    try:
        table = leaderboard(session, size=size, mode=mode, source=source, sort=sort, order=order)
        body, media = render(table, format)
    except LeaderboardError as exc:
        field = str(exc).split(":", 1)[0]
        raise _bad(field if field in ("mode", "source", "sort", "order", "format") else "query", exc) from None
    headers = {}
    if download or format != "json":
        label = "-".join(p for p in (size or "all", mode) if p)
        headers["Content-Disposition"] = f'attachment; filename="leaderboard-{label}.{_EXT[format]}"'
    return Response(content=body, media_type=media, headers=headers)


@router.post("/import", status_code=status.HTTP_201_CREATED, dependencies=WRITE,
             responses={**WRITE_ERRORS, **errors(413, (422, "rows that do not parse (the message says which)"))},
             # the body is read raw (CSV or JSON), so FastAPI cannot describe it by itself
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {}}}}},
             summary="Import published rows (CSV or JSON, same columns as the shipped table)",
             description="Body: CSV (`Content-Type: text/csv`) with columns size, model, <bench>_<mode> ... "
                         "(e.g. math500_greedy, avg_t0.1), cost_rollouts and optionally reference; or JSON, a list of such "
                         "objects or {\"reference\", \"dataset\", \"rows\"}. Rows are stored as published with the "
                         "reference; importing the same dataset/size/model again replaces it.")
async def import_published(request: Request, session: SessionDep,
                           reference: str | None = Query(None, max_length=1000,
                                                         description="where the numbers come from (required unless "
                                                                     "each row or the JSON body names it)"),
                           dataset: str | None = Query(None, max_length=100,
                                                       description="a name for this set of rows (default: from the "
                                                                   "reference)")) -> dict:
    raw = await request.body()
    if len(raw) > _MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="import body larger than 2 MiB")
    if not raw.strip():
        raise _bad("body", ValueError("empty body: send CSV or JSON rows"))
    try:
        entries = parse_import(raw, request.headers.get("content-type"), reference=reference, dataset=dataset)
    except (LeaderboardError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=[{"type": "value_error", "loc": ["body"], "msg": str(exc), "field": "body"}]) from None
    counts = store_entries(session, entries)
    session.commit()
    return {**counts, "dataset": entries[0]["dataset"], "reference": entries[0]["reference"],
            "models": sorted({e["model"] for e in entries})}


@router.delete("/entries", status_code=status.HTTP_204_NO_CONTENT, dependencies=WRITE,
               responses={**WRITE_ERRORS, **errors((404, "no leaderboard entry with this key"))},
               summary="Remove one leaderboard line (all its benchmarks and modes) by its key")
def remove_entry(session: SessionDep, key: str = Query(..., min_length=1, max_length=255)) -> Response:
    if not delete_entry(session, key):
        raise HTTPException(404, detail=f"no leaderboard entry with key {key!r}")
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
