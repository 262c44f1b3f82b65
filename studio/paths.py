"""The studio's path policy: which files a studio job may read, which config fields only an admin
may set, and how paths are shown to readers without a token.

Studio submissions (POST /runs, POST /evaluations) are checked here by the API, and the stored job
is checked again by the worker before it trains or evaluates (a job queued before the policy
tightened, or a symlink swapped since, fails with the same message). The `remix` CLI, run by a
user on their own machine, is not restricted: nothing in remix_engine calls this module.

A source is either *named* ('toy', a benchmark found in the benchmark folders, `hf:<id>`, a hub
model id) or a *path*, which must resolve (symlinks and `..` followed) inside one of the allowed
roots (`data_roots`). The sources are classified the way the engine will read them: an existing
local file wins over a name, as it does in remix_engine/data.py, benchmarks.py and models.py. A
refusal's message depends only on the field and the value, never on whether the path exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from remix_engine.benchmarks import benchmark_search_dirs, find_benchmark_file
from remix_engine.toy import TASKS as TOY_TASKS
from studio.settings import PROJECT_DIR, Settings, get_settings

# The checkout's neighbour that holds the benchmarks/ and train/ sets (remix_engine/benchmarks.py
# searches its benchmarks/ folder; README's training example reads train/).
SHARED_DATA_DIR = PROJECT_DIR.parent / "shared" / "data"

# data: data.train/heldout; benchmark: eval benchmarks; model: a run's model.name_or_path ('toy'
# builds the toy model); checkpoint: an evaluation's model (there the engine reads a local 'toy' first).
Kind = Literal["data", "benchmark", "model", "checkpoint"]

_BARE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?")  # name or owner/name
_OTHER_SOURCES = {
    "data": "'toy', a benchmark name or hf:<dataset id>[:split]",
    "benchmark": "a benchmark name or hf:<dataset id>[:split]",
    "model": "'toy' or a Hugging Face hub id",
    "checkpoint": "a run's checkpoint (run_id) or a Hugging Face hub id",
}

# config field → (Settings attribute that allows it, its environment variable)
ADMIN_FIELDS = {
    "model.trust_remote_code": ("allow_remote_code", "REMIX_ALLOW_REMOTE_CODE"),
    "warm_start.cache_dir": ("allow_cache_dirs", "REMIX_ALLOW_CACHE_DIRS"),
}


@dataclass(frozen=True)
class Refusal:
    field: str  # dotted config field or request field, e.g. "data.train", "benchmarks"
    message: str  # starts with the field (and index), says what is allowed


class PolicyError(ValueError):
    def __init__(self, refusals: list[Refusal]):
        self.refusals = refusals
        super().__init__("refused by the studio's path policy: " + "; ".join(r.message for r in refusals))


# ------------------------------------------------------------------------------------- roots
def data_roots(settings: Settings | None = None) -> list[Path]:
    """The allowed roots, resolved: REMIX_DATA_ROOTS (or the defaults) plus the runs dir."""
    settings = settings or get_settings()
    if settings.data_roots.strip():
        roots = [Path(r.strip()).expanduser() for r in settings.data_roots.split(os.pathsep) if r.strip()]
    else:
        roots = [*benchmark_search_dirs(), SHARED_DATA_DIR, settings.data_path]
    roots.append(settings.runs_path)  # the studio's own checkpoints (evaluations of a run)
    out: list[Path] = []
    for root in roots:
        resolved = root.resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def _inside_roots(value: str, roots: list[Path]) -> bool:
    try:
        resolved = Path(value).expanduser().resolve()  # follows symlinks, folds `..`
    except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops, ...
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def _exists(value: str) -> bool:
    try:
        return Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


def _is_named(value: str, kind: Kind) -> bool:
    """A source that is not a path, in the engine's order of precedence."""
    if (kind == "model" and value == "toy") or (kind == "data" and value in TOY_TASKS):
        return True
    if kind in ("data", "benchmark") and value.startswith("hf:"):
        return True
    if _exists(value):  # the engine reads a local file or folder of that name first
        return False
    if kind in ("data", "benchmark") and _BARE_NAME.fullmatch(value) and find_benchmark_file(value):
        return True
    # hub ids: models by the name `owner/name` (or `name`); benchmarks as `owner/name`
    if kind in ("model", "checkpoint") or (kind == "benchmark" and "/" in value):
        return bool(_HUB_ID.fullmatch(value))
    return False


def check_source(field: str, value: str, kind: Kind, settings: Settings | None = None) -> Refusal | None:
    """None when `value` may be read by a studio job, else a Refusal (same text whether or not the path exists)."""
    text = value.strip() if kind in ("data", "benchmark") else value  # as the engine reads it (models: unstripped)
    if _is_named(text, kind) or _inside_roots(text, data_roots(settings)):
        return None
    shown = value if len(value) <= 200 else value[:200] + "…"
    return Refusal(field.split("[")[0], f"{field}: {shown!r} is not allowed: use {_OTHER_SOURCES[kind]}, or a "
                                        "path inside the studio's data roots (REMIX_DATA_ROOTS)")


# ---------------------------------------------------------------------------------- requests
def run_config_refusals(cfg: Any, settings: Settings | None = None) -> list[Refusal]:
    """Everything a studio run config may not do (`cfg`: a remix_engine RunConfig)."""
    settings = settings or get_settings()
    checks: list[tuple[str, str, Kind]] = [("data.train", cfg.data.train, "data"),
                                           ("data.heldout", cfg.data.heldout, "data"),
                                           ("model.name_or_path", cfg.model.name_or_path, "model")]
    checks += [(f"trainer.eval_benchmarks[{i}]", spec, "benchmark") for i, spec in enumerate(cfg.trainer.eval_benchmarks)]
    out = [r for field, value, kind in checks if (r := check_source(field, value, kind, settings))]
    values = {"model.trust_remote_code": cfg.model.trust_remote_code, "warm_start.cache_dir": cfg.warm_start.cache_dir}
    for field, (allowed, env) in ADMIN_FIELDS.items():
        if values[field] not in (None, False) and not getattr(settings, allowed):
            out.append(Refusal(field, f"{field}: only the studio's admin can allow this over the API "
                                      f"({env}=1); leave it unset"))
    return out


def evaluation_refusals(model_path: str | None, benchmarks: Iterable[str], *, model_field: str = "model",
                        settings: Settings | None = None) -> list[Refusal]:
    """Everything an evaluation may not read: its model (path or hub id) and its benchmarks."""
    out = []
    if model_path is not None and (r := check_source(model_field, model_path, "checkpoint", settings)):
        out.append(r)
    out += [r for i, spec in enumerate(benchmarks) if (r := check_source(f"benchmarks[{i}]", spec, "benchmark", settings))]
    return out


# --------------------------------------------------------------------------- public display
# An absolute (or home-relative) path inside free text: not preceded by a word character or
# another path/URL character, so URLs (redis://host/0), fractions and dates are left alone; or
# the file of a sqlite:////abs/studio.db URL.
_ABS_PATH = re.compile(r"(?:(?<=:///)|(?<![\w.:/~\-]))~?/[^\s'\"`,;:()\[\]{}<>|]+")


def display_path(path: str | os.PathLike, settings: Settings | None = None) -> str:
    """How a reader without a token sees a path: relative to its root, named by the root's folder
    (`runs/5/attempt-01/...`, `data/train/x.jsonl`); outside every root only the last part."""
    full = Path(os.path.normpath(Path(path).expanduser().absolute()))
    for root in sorted(data_roots(settings), key=lambda r: len(r.parts), reverse=True):
        if full.is_relative_to(root):
            return str(Path(root.name) / full.relative_to(root))
    return "…/" + full.name


def scrub(value: Any, settings: Settings | None = None) -> Any:
    """`value` with every absolute path in its strings shown as `display_path` (dicts and lists too)."""
    if isinstance(value, str):
        if "/" not in value:
            return value
        settings = settings or get_settings()
        return _ABS_PATH.sub(lambda m: display_path(m.group(0), settings), value)
    if isinstance(value, dict):
        return {k: scrub(v, settings) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, settings) for v in value]
    return value
