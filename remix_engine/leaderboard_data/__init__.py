"""Published leaderboard rows shipped with the engine (package data).

``remix_readme_results.csv`` holds the two result tables of the ReMix project README (arXiv
2507.06892 v3, 1.5B and 7B models; each benchmark as ``<bench>_greedy`` and ``<bench>_t0.1``, the
published average and the training cost in millions of rollouts). ``remix_readme_results.source.json``
names the source. These are published numbers, never measurements of this project.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

PUBLISHED_CSV = "remix_readme_results.csv"
PUBLISHED_SOURCE = "remix_readme_results.source.json"


def published_csv_text() -> str:
    """The shipped CSV, as text."""
    return resources.files(__name__).joinpath(PUBLISHED_CSV).read_text(encoding="utf-8")


def published_source() -> dict[str, Any]:
    """The sidecar describing where the shipped rows come from (dataset id, reference, sha256)."""
    return json.loads(resources.files(__name__).joinpath(PUBLISHED_SOURCE).read_text(encoding="utf-8"))
