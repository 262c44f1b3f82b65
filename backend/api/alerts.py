"""Health alerts of a run (remix_engine/alerts.py evaluates them; the worker's sink stores them)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from fastapi import APIRouter, Depends
from sqlalchemy import bindparam, case, func, select
from sqlmodel import Session

from backend.api.deps import API_PREFIX, SessionDep, SessionReleasingRoute, errors, get_run_or_404
from backend.api.schemas import AlertCounts, AlertLinks, AlertOut
from backend.auth import require_read
from remix_engine.alerts import RULES
from studio.models import Alert

router = APIRouter(tags=["runs"], dependencies=[Depends(require_read)], route_class=SessionReleasingRoute)


def alert_out(run_id: int, a: Alert) -> AlertOut:
    rule = RULES.get(a.rule)
    steps = f"step_min={a.first_step}&step_max={a.last_step}"
    return AlertOut(
        rule=a.rule, title=rule.title if rule else a.rule, explanation=rule.explanation if rule else "",
        status=a.status, first_step=a.first_step, last_step=a.last_step, value=a.value, threshold=a.threshold,
        detail=a.detail, metric=a.metric,
        links=AlertLinks(metrics=f"{API_PREFIX}/runs/{run_id}/metrics?keys={quote(a.metric, safe='')}&{steps}",
                         traces=f"/traces/{run_id}?{steps}{rule.traces if rule else ''}"))


# built once: every run list and run page asks, and building the statement cost more than running it
_COUNTS = (select(Alert.run_id, func.sum(case((Alert.status == "firing", 1), else_=0)), func.count())
           .where(Alert.run_id.in_(bindparam("ids", expanding=True))).group_by(Alert.run_id))


def alert_counts(session: Session, run_ids: Iterable[int]) -> dict[int, AlertCounts]:
    """Per run: episodes still firing and all episodes (the runs list's badges), in one query."""
    ids = list(run_ids)
    if not ids:
        return {}
    rows = session.execute(_COUNTS, {"ids": ids})
    return {rid: AlertCounts(firing=int(firing or 0), total=int(total)) for rid, firing, total in rows}


@router.get("/runs/{run_id}/alerts", response_model=list[AlertOut], responses=errors(404),
            summary="Health alerts of a run (firing first, then by first step)")
def list_alerts(run_id: int, session: SessionDep) -> list[AlertOut]:
    get_run_or_404(session, run_id)
    rows = session.execute(select(Alert).where(Alert.run_id == run_id)
                           .order_by((Alert.status != "firing"), Alert.first_step, Alert.rule)).scalars()
    return [alert_out(run_id, a) for a in rows]
