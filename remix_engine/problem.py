"""`Problem` (one prompt: id, problem text, reference answer(s)) and `DataError` (a source could not
be loaded). Their own module so that the loaders (data.py), the task generator (toy.py) and the
benchmark lookup (benchmarks.py) share them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    id: str
    problem: str
    answer: str | list[str]  # one reference, or several accepted ones (any match is correct)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answers(self) -> list[str]:
        return [self.answer] if isinstance(self.answer, str) else list(self.answer)


class DataError(ValueError):
    """A data source could not be loaded; the message names the source (and line)."""
