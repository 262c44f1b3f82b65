"""Rollouts: filtered keyset-paginated lists, one rollout with its uses, a GRPO group side by side,
and the off-policy views (reuse ratio per step, staleness histogram, ratio/clip per policy age)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import func, or_, select, tuple_
from sqlmodel import Session

from backend.api.deps import SessionDep, SessionReleasingRoute, errors, get_run_or_404
from backend.api.schemas import (
    GroupOut,
    OffPolicyOut,
    RolloutDetail,
    RolloutOut,
    RolloutPage,
    RolloutUseOut,
)
from backend.auth import require_read
from remix_engine.group_stats import DEGENERATE_NOTE, FORMULAS, GRPO_EPS, group_stats
from studio import queries
from studio.models import Rollout, RolloutText, RolloutUse

router = APIRouter(tags=["rollouts"], dependencies=[Depends(require_read)], route_class=SessionReleasingRoute)

PREVIEW_CHARS = 240


def _encode_cursor(step: int, rid: int, order: str) -> str:
    raw = json.dumps({"s": step, "i": rid, "o": order}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, order: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        step, rid, corder = int(data["s"]), int(data["i"]), data["o"]
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise HTTPException(400, detail="cursor: not a cursor returned by this endpoint") from None
    if corder != order:
        raise HTTPException(400, detail=f"cursor: was made for order={corder}, not order={order}")
    return step, rid


def _rollout_out(r: Rollout, text: RolloutText | None, *, full_text: bool, preview: bool = True) -> dict:
    data = {c: getattr(r, c) for c in RolloutOut.model_fields if hasattr(r, c) and c not in
            ("prompt", "response", "response_preview")}
    if text is not None:
        if full_text:
            data["prompt"], data["response"] = text.prompt, text.response
        if preview:
            resp = text.response or ""
            data["response_preview"] = resp if len(resp) <= PREVIEW_CHARS else resp[:PREVIEW_CHARS] + "…"
    return data


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@router.get("/runs/{run_id}/rollouts", response_model=RolloutPage, summary="Rollouts of a run (filtered, keyset-paginated)",
            responses=errors((400, "cursor: not one this endpoint returned for this order"), 404))
def list_rollouts(
    run_id: int, session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    order: Literal["asc", "desc"] = Query("asc", description="by generating step, then id"),
    step_min: int | None = Query(None, description="generated at step ≥"),
    step_max: int | None = Query(None, description="generated at step ≤"),
    policy_version: int | None = None,
    reuse_count: int | None = Query(None, ge=0, description="exact number of replays (uses with age > 0)"),
    reuse_min: int | None = Query(None, ge=0),
    reuse_max: int | None = Query(None, ge=0),
    correct: bool | None = None,
    format_ok: bool | None = None,
    truncated: bool | None = None,
    reward: float | None = Query(None, description="exact reward"),
    reward_min: float | None = None,
    reward_max: float | None = None,
    group_id: str | None = None,
    prompt_id: str | None = None,
    q: str | None = Query(None, max_length=200, description="text search in prompt, response and extracted answer"),
    include_text: bool = Query(False, description="full prompt and response (otherwise a preview)"),
) -> RolloutPage:
    get_run_or_404(session, run_id)
    cond = [Rollout.run_id == run_id]
    for col, lo, hi in ((Rollout.step, step_min, step_max), (Rollout.reuse_count, reuse_min, reuse_max),
                        (Rollout.reward, reward_min, reward_max)):
        if lo is not None:
            cond.append(col >= lo)
        if hi is not None:
            cond.append(col <= hi)
    for col, value in ((Rollout.policy_version, policy_version), (Rollout.reuse_count, reuse_count),
                       (Rollout.correct, correct), (Rollout.format_ok, format_ok), (Rollout.truncated, truncated),
                       (Rollout.reward, reward), (Rollout.group_id, group_id), (Rollout.prompt_id, prompt_id)):
        if value is not None:
            cond.append(col == value)
    if q:
        pattern = _like(q)
        hits = select(RolloutText.rollout_id).where(or_(RolloutText.response.ilike(pattern, escape="\\"),
                                                        RolloutText.prompt.ilike(pattern, escape="\\")))
        cond.append(or_(Rollout.id.in_(hits), Rollout.extracted.ilike(pattern, escape="\\")))
    count = session.execute(select(func.count()).select_from(Rollout).where(*cond)).scalar_one()
    page_cond = list(cond)
    if cursor:
        step, rid = _decode_cursor(cursor, order)
        key = tuple_(Rollout.step, Rollout.id)
        page_cond.append(key > tuple_(step, rid) if order == "asc" else key < tuple_(step, rid))
    ordering = (Rollout.step.asc(), Rollout.id.asc()) if order == "asc" else (Rollout.step.desc(), Rollout.id.desc())
    rows = session.execute(select(Rollout, RolloutText).outerjoin(RolloutText, RolloutText.rollout_id == Rollout.id)
                           .where(*page_cond).order_by(*ordering).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    data = [RolloutOut(**_rollout_out(r, t, full_text=include_text)) for r, t in rows]
    next_cursor = _encode_cursor(rows[-1][0].step, rows[-1][0].id, order) if more and rows else None
    return RolloutPage(data=data, count=count, limit=limit, next_cursor=next_cursor)


def _uses_of(session: Session, rollout_ids: list[int]) -> dict[int, list[RolloutUseOut]]:
    out: dict[int, list[RolloutUseOut]] = {rid: [] for rid in rollout_ids}
    if not rollout_ids:
        return out
    for u in session.execute(select(RolloutUse).where(RolloutUse.rollout_id.in_(rollout_ids))
                             .order_by(RolloutUse.step)).scalars():
        out[u.rollout_id].append(RolloutUseOut(step=u.step, age=u.age, ratio_mean=u.ratio_mean, ratio_max=u.ratio_max,
                                               clipfrac=u.clipfrac, kl_to_behavior=u.kl_to_behavior))
    return out


@router.get("/rollouts/{rollout_id}", response_model=RolloutDetail, summary="One rollout with its text and uses",
            responses=errors(404))
def get_rollout(rollout_id: int, session: SessionDep) -> RolloutDetail:
    row = session.execute(select(Rollout, RolloutText).outerjoin(RolloutText, RolloutText.rollout_id == Rollout.id)
                          .where(Rollout.id == rollout_id)).first()
    if row is None:
        raise HTTPException(404, detail=f"rollout {rollout_id} not found")
    r, t = row
    return RolloutDetail(**_rollout_out(r, t, full_text=True, preview=False), uses=_uses_of(session, [r.id])[r.id])


@router.get("/runs/{run_id}/groups/{group_id}", response_model=GroupOut, responses=errors(404),
            summary="A GRPO group: every response to one prompt at one step, side by side")
def get_group(run_id: int, group_id: str, session: SessionDep) -> GroupOut:
    run = get_run_or_404(session, run_id)
    rows = session.execute(select(Rollout, RolloutText).outerjoin(RolloutText, RolloutText.rollout_id == Rollout.id)
                           .where(Rollout.run_id == run_id, Rollout.group_id == group_id)
                           .order_by(Rollout.uid)).all()
    if not rows:
        raise HTTPException(404, detail=f"group {group_id!r} not found in run {run_id}")
    uses = _uses_of(session, [r.id for r, _ in rows])
    rollouts = [RolloutDetail(**_rollout_out(r, t, full_text=True, preview=False), uses=uses[r.id]) for r, t in rows]
    stats = group_stats([r.reward for r, _ in rows if r.reward is not None])
    kind = ((run.config or {}).get("actor") or {}).get("advantage")
    formula = FORMULAS.get(kind, "")
    if kind in ("grpo", "drgrpo", "rloo"):
        formula += f"; {DEGENERATE_NOTE}"
    first, first_text = rows[0]
    return GroupOut(run_id=run_id, group_id=group_id, step=first.step, policy_version=first.policy_version,
                    prompt_id=first.prompt_id, prompt=first_text.prompt if first_text else "",
                    reference=first.reference, size=len(rows), correct=sum(1 for r, _ in rows if r.correct),
                    reward_mean=stats.mean, reward_std=stats.std, zero_variance=stats.degenerate,
                    advantage_kind=kind, advantage_eps=GRPO_EPS if kind == "grpo" else None,
                    advantage_formula=formula, rollouts=rollouts)


@router.get("/runs/{run_id}/offpolicy", response_model=OffPolicyOut, responses=errors(404),
            summary="Off-policy reuse: reuse ratio per step, staleness histogram, ratio/clip per policy age")
def get_offpolicy(run_id: int, session: SessionDep, step_min: int | None = None,
                  step_max: int | None = None) -> OffPolicyOut:
    get_run_or_404(session, run_id)
    return OffPolicyOut(run_id=run_id, **queries.offpolicy(session, run_id, step_min, step_max))
