"""Health alerts of a run (remix_engine/alerts.py evaluates them; the worker's sink stores them)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends
from sqlalchemy import select

from backend.api.deps import API_PREFIX, SessionDep, SessionReleasingRoute, errors, get_run_or_404
from backend.api.schemas import AlertLinks, AlertOut
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


@router.get("/runs/{run_id}/alerts", response_model=list[AlertOut], responses=errors(404),
            summary="Health alerts of a run (firing first, then by first step)")
def list_alerts(run_id: int, session: SessionDep) -> list[AlertOut]:
    get_run_or_404(session, run_id)
    rows = session.execute(select(Alert).where(Alert.run_id == run_id)
                           .order_by((Alert.status != "firing"), Alert.first_step, Alert.rule)).scalars()
    return [alert_out(run_id, a) for a in rows]
