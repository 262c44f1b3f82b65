"""The token lens: per-token statistics of a sampled rollout at each of its uses (trainer.token_stats_every)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from backend.api.deps import SessionDep, SessionReleasingRoute, errors
from backend.api.schemas import TokenLensOut, TokenUseOut
from backend.auth import require_read
from studio.models import Rollout, RolloutTokenStats

router = APIRouter(tags=["rollouts"], dependencies=[Depends(require_read)], route_class=SessionReleasingRoute)


def _ratio(logp: float | None, behavior: float | None) -> float | None:
    if logp is None or behavior is None:
        return None
    return math.exp(max(min(logp - behavior, 20.0), -20.0))  # the trainer's bound on log-ratios


@router.get("/rollouts/{rollout_id}/tokens", response_model=TokenLensOut, responses=errors(404),
            summary="Per-token log-probs, ratios, advantages, entropy and clipping of a rollout, per use")
def get_token_lens(rollout_id: int, session: SessionDep) -> TokenLensOut:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise HTTPException(404, detail=f"rollout {rollout_id} not found")
    rows = session.execute(select(RolloutTokenStats).where(RolloutTokenStats.run_id == rollout.run_id,
                                                           RolloutTokenStats.rollout_uid == rollout.uid)
                           .order_by(RolloutTokenStats.step)).scalars().all()
    if not rows:
        raise HTTPException(404, detail=f"rollout {rollout_id} has no token statistics: the trainer keeps them for one "
                                        "rollout in trainer.token_stats_every (0 = none)")
    tokens = behavior = None
    uses = []
    for row in rows:
        data = RolloutTokenStats.unpack(row.payload)
        if "tokens" in data:
            tokens, behavior = data["tokens"], data.get("behavior_logprobs")
        uses.append(data | {"step": row.step, "age": row.age})
    return TokenLensOut(rollout_id=rollout.id, run_id=rollout.run_id, tokens=tokens, behavior_logprobs=behavior, uses=[
        TokenUseOut(step=u["step"], age=u["age"], logprobs=u["logprobs"], advantages=u["advantages"],
                    entropy=u["entropy"], clipped=u["clipped"],
                    ratios=[_ratio(lp, b) for lp, b in zip(u["logprobs"], behavior or [None] * len(u["logprobs"]),
                                                            strict=True)])
        for u in uses])
