"""Rollouts: filtered keyset-paginated lists, one rollout with its uses, a GRPO group side by side,
and the off-policy views (reuse ratio per step, staleness histogram, ratio/clip per policy age)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select
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
from studio import queries, rollout_text
from studio.models import Rollout, RolloutUse

router = APIRouter(tags=["rollouts"], dependencies=[Depends(require_read)], route_class=SessionReleasingRoute)

MAX_GROUP = 256  # responses of one group shown side by side (a GRPO group has a few to a few dozen)


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


def _rollout_out(r: Rollout, preview: str) -> dict:
    """The rollout's fields with its response's preview."""
    data = {c: getattr(r, c) for c in RolloutOut.model_fields if hasattr(r, c) and c not in
            ("prompt", "response", "response_preview")}
    data["response_preview"] = preview
    return data


def _with_text(r: Rollout, text: tuple[str, str]) -> dict:
    """The rollout's fields with its prompt and response."""
    prompt, response = text
    return {**_rollout_out(r, rollout_text.preview(response)), "prompt": prompt, "response": response}


@router.get("/runs/{run_id}/rollouts", response_model=RolloutPage, summary="Rollouts of a run (filtered, keyset-paginated)",
            responses=errors((400, "cursor: not one this endpoint returned for this order"), 404))
def list_rollouts(
    run_id: int, session: SessionDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    order: Literal["asc", "desc"] = Query("asc", description="by generating step, then id (a search: by id, the "
                                                             "same order within a run)"),
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
    q: str | None = Query(None, max_length=200, description="words in the prompt, response or extracted answer: "
                                                             "rollouts holding every word (whole words), "
                                                             "case-insensitive"),
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
    after = _decode_cursor(cursor, order) if cursor else None
    rows, count, capped = queries.rollout_page(session, run_id, cond, q, after, order, limit)
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    if include_text:
        texts = queries.rollout_texts(session, ids)
        data = [RolloutOut(**_with_text(r, texts.get(r.id, ("", "")))) for r in rows]
    else:
        previews = queries.rollout_previews(session, ids)
        data = [RolloutOut(**_rollout_out(r, previews.get(r.id, ""))) for r in rows]
    next_cursor = _encode_cursor(rows[-1].step, rows[-1].id, order) if more and rows else None
    return RolloutPage(data=data, count=count, total_capped=capped, limit=limit, next_cursor=next_cursor)


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
    r = session.get(Rollout, rollout_id)
    if r is None:
        raise HTTPException(404, detail=f"rollout {rollout_id} not found")
    text = queries.rollout_texts(session, [r.id]).get(r.id, ("", ""))
    return RolloutDetail(**_with_text(r, text), uses=_uses_of(session, [r.id])[r.id])


@router.get("/runs/{run_id}/groups/{group_id}", response_model=GroupOut, responses=errors(404),
            summary="A GRPO group: every response to one prompt at one step, side by side")
def get_group(run_id: int, group_id: str, session: SessionDep) -> GroupOut:
    run = get_run_or_404(session, run_id)
    rows = session.execute(select(Rollout).where(Rollout.run_id == run_id, Rollout.group_id == group_id)
                           .order_by(Rollout.uid).limit(MAX_GROUP)).scalars().all()
    if not rows:
        raise HTTPException(404, detail=f"group {group_id!r} not found in run {run_id}")
    uses = _uses_of(session, [r.id for r in rows])
    texts = queries.rollout_texts(session, [r.id for r in rows])
    rollouts = [RolloutDetail(**_with_text(r, texts.get(r.id, ("", ""))), uses=uses[r.id]) for r in rows]
    stats = group_stats([r.reward for r in rows if r.reward is not None])
    kind = ((run.config or {}).get("actor") or {}).get("advantage")
    formula = FORMULAS.get(kind, "")
    if kind in ("grpo", "drgrpo", "rloo"):
        formula += f"; {DEGENERATE_NOTE}"
    first = rows[0]
    return GroupOut(run_id=run_id, group_id=group_id, step=first.step, policy_version=first.policy_version,
                    prompt_id=first.prompt_id, prompt=texts.get(first.id, ("", ""))[0],
                    reference=first.reference, size=len(rows), correct=sum(1 for r in rows if r.correct),
                    reward_mean=stats.mean, reward_std=stats.std, zero_variance=stats.degenerate,
                    advantage_kind=kind, advantage_eps=GRPO_EPS if kind == "grpo" else None,
                    advantage_formula=formula, rollouts=rollouts)


@router.get("/runs/{run_id}/offpolicy", response_model=OffPolicyOut, responses=errors(404),
            summary="Off-policy reuse: reuse ratio per step, staleness histogram, ratio/clip per policy age")
def get_offpolicy(run_id: int, session: SessionDep, step_min: int | None = None,
                  step_max: int | None = None) -> OffPolicyOut:
    get_run_or_404(session, run_id)
    return OffPolicyOut(run_id=run_id, **queries.offpolicy(session, run_id, step_min, step_max))
