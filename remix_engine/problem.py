"""`Problem`: one prompt source item (id, problem text, reference answer(s)). Its own module so that
the loaders (data.py) and the task generators (toy.py) both import it without importing each other."""

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
