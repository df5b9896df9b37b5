"""What a job template's run produced, and how it reports progress.

Apart from ``templates`` so that the methods it dispatches to (``vqe``, ``qaoa``,
``bb84``) can build a result without importing the dispatcher: no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "TemplateResult"]

Progress = Callable[[str], None]
"""Receives one line of progress for people."""


@dataclass
class TemplateResult:
    """What a template run produced.

    Attributes:
        name: The template's name.
        method: The method that ran.
        engine: The engine the jobs asked for.
        summary: The method's figures, JSON-ready (energies, cut, QBER …).
        lines: The summary for people, one line each.
        jobs: Jobs submitted.
        job_ids: Their ids, in submission order.
        engines_used: Engines that ran them (from each JobCompleted).
    """

    name: str
    method: str
    engine: str
    summary: dict[str, Any]
    lines: list[str]
    jobs: int = 0
    job_ids: list[str] = field(default_factory=list)
    engines_used: list[str] = field(default_factory=list)
