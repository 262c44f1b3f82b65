"""studio/metric_chunks.py: a chunk keeps its points sorted by step, one per step, the newest copy."""

from __future__ import annotations

import math

from studio import metric_chunks as mc


def _steps_values(blob: bytes) -> list[tuple[int, float | None]]:
    pts = mc.unpack(blob)
    return [(int(s), None if math.isnan(v) else v) for s, v in zip(pts[mc.STEP], pts[mc.VALUE], strict=True)]


def test_merge_sorts_by_step_and_the_new_point_of_a_step_wins():
    blob = mc.merge(None, mc.points([(5, 0.5, 40, 1.0, 9.0), (2, 0.2, 16, 0.4, 8.0)]))
    assert _steps_values(blob) == [(2, 0.2), (5, 0.5)]
    blob = mc.merge(blob, mc.points([(3, None, None, None, 10.0), (5, -5.0, 40, 1.0, 11.0)]))
    assert _steps_values(blob) == [(2, 0.2), (3, None), (5, -5.0)]
    assert mc.unpack(blob)[mc.WALL_TIME].tolist() == [8.0, 10.0, 11.0]


def test_until_keeps_the_points_up_to_a_step_or_nothing():
    blob = mc.merge(None, mc.points([(s, float(s), s * 8, s * 0.1, 1.0) for s in (100, 101, 150)]))
    assert _steps_values(mc.until(blob, 101)) == [(100, 100.0), (101, 101.0)]
    assert mc.until(blob, 99) is None
    assert mc.chunk_of(99) == 0 and mc.chunk_of(100) == 1 and mc.chunk_of(-1) == -1
