"""A metric series is stored in chunks: the points of CHUNK_STEPS consecutive steps of one (run,
key) as one blob of little-endian float64 columns, FIELDS in order, sorted by step; NaN marks a
missing value (a NaN/inf metric, a step without a rollout count). The compare page's 100 runs × 1
key × 1,000 steps are then ~1,000 blobs that numpy reads in place, where 100k rows cost 80–140 ms
of database and driver time before any Python ran (the metrics table until migration 0010).

Pure functions; the sink (worker/sink.py) merges a batch's points into the stored chunks and
studio/queries.py reads them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CHUNK_STEPS = 100  # a full chunk is 5 × 8 × 100 = 4,000 bytes
FIELDS = ("step", "value", "rollouts", "elapsed_s", "wall_time")
STEP, VALUE, ROLLOUTS, ELAPSED_S, WALL_TIME = range(len(FIELDS))
_DTYPE = np.dtype("<f8")  # float64 holds steps and rollout counts exactly (below 2**53)


def chunk_of(step: int) -> int:
    return step // CHUNK_STEPS


def points(rows: Iterable[tuple]) -> np.ndarray:
    """(len(FIELDS), n) array of rows given as FIELDS tuples; None becomes NaN."""
    arr = np.array(list(rows), dtype=float).reshape(-1, len(FIELDS))
    return arr.T


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=_DTYPE).reshape(len(FIELDS), -1)


def pack(pts: np.ndarray) -> bytes:
    return np.ascontiguousarray(pts, dtype=_DTYPE).tobytes()


def merge(blob: bytes | None, new: np.ndarray) -> bytes:
    """The chunk `blob` (None: none yet) with the points `new` (distinct steps) added; on a step
    both have, `new` wins (a re-delivered or re-emitted step)."""
    if blob is not None:
        old = unpack(blob)
        new = np.concatenate([old[:, ~np.isin(old[STEP], new[STEP])], new], axis=1)
    return pack(new[:, np.argsort(new[STEP], kind="stable")])


def until(blob: bytes, last_step: int) -> bytes | None:
    """The chunk without its points after `last_step` (None: nothing is left)."""
    pts = unpack(blob)
    kept = pts[:, pts[STEP] <= last_step]
    return pack(kept) if kept.shape[1] else None


def concat(blobs: list[bytes]) -> np.ndarray:
    """One series from its chunks (at least one) in chunk order."""
    return np.concatenate([unpack(b) for b in blobs], axis=1)
