"""/api/v1/config: the run config's settings with their help text, and a preset's full config.

The help text is the `Field(description=...)` of remix_engine/config.py: the same text that
`remix config` prints, that /docs shows (the RunConfig schema below) and that the New-run page
shows next to its inputs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from backend.api.deps import SessionReleasingRoute, errors
from backend.auth import require_read
from remix_engine.config import ALGORITHMS, ConfigError, RunConfig, build_config, config_fields

router = APIRouter(prefix="/config", tags=["config"], dependencies=[Depends(require_read)],
                   route_class=SessionReleasingRoute)


class ConfigField(BaseModel):
    key: str
    type: str
    default: Any
    description: str


@router.get("/fields", response_model=list[ConfigField], summary="Every setting: dotted key, type, default, help")
def list_fields() -> list[ConfigField]:
    return [ConfigField(**f) for f in config_fields()]


@router.get("/presets/{preset}", response_model=RunConfig,
            responses=errors((404, "no such preset"), (422, "an unknown algorithm")),
            summary="The complete config a preset gives (what POST /runs starts from before overrides)")
def get_preset(preset: str, algorithm: str | None = Query(None, description=", ".join(ALGORITHMS))) -> RunConfig:
    try:
        return build_config(preset, algorithm)
    except ConfigError as exc:
        raise HTTPException(404 if str(exc).startswith("preset") else 422, detail=str(exc)) from None
