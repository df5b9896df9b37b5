"""Engine choice: the job's named engine, or for ``auto`` the cheapest capable one.

``rank`` orders candidates by predicted run time plus the wait behind each engine's
queue (docs/routing.md); ``choose_engine`` resolves a named engine or a pinned default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qbus.errors import Reject

DEFAULT_ENGINE = "qiskit-aer"


def choose_engine(
    requested: str, installed: list[str], default: str = DEFAULT_ENGINE
) -> tuple[str, str]:
    """Return (engine, reason) for a job that asked for ``requested``.

    Raises:
        Reject: ``unknown_engine`` naming the installed engines.
    """
    if requested == "auto":
        engine, reason = default, "auto: default engine"
    else:
        engine, reason = requested, "requested by the job"
    if engine not in installed:
        raise Reject(
            f"unknown engine {engine!r}; installed engines: {', '.join(sorted(installed))}",
            code="unknown_engine",
            where="$.engine",
        )
    return engine, reason


@dataclass(frozen=True, slots=True)
class Ranked:
    """One candidate engine's predicted cost.

    Attributes:
        engine: Engine name.
        run_seconds: Predicted run time of this job.
        wait_seconds: Predicted wait behind the engine's queue (pending × mean time).
    """

    engine: str
    run_seconds: float
    wait_seconds: float = 0.0

    @property
    def total(self) -> float:
        """Run plus wait."""
        return self.run_seconds + self.wait_seconds


def rank(
    engines: list[str], predict: Callable[[str], float], wait: Callable[[str], float]
) -> list[Ranked]:
    """Candidates cheapest first (ties by name, so the choice is deterministic)."""
    ranked = [Ranked(e, predict(e), wait(e)) for e in engines]
    return sorted(ranked, key=lambda r: (r.total, r.engine))


def describe(ranked: list[Ranked], limit: int = 3) -> str:
    """A human-readable reason for the first of ``ranked``, naming the runners-up."""

    def fmt(r: Ranked) -> str:
        text = f"{r.engine} {r.run_seconds * 1e3:.3g} ms"
        if r.wait_seconds > 0:
            text += f" + {r.wait_seconds * 1e3:.3g} ms queue"
        return text

    best, rest = ranked[0], ranked[1 : 1 + limit]
    reason = f"auto: cheapest predicted: {fmt(best)}"
    if rest:
        reason += "; runners-up: " + ", ".join(fmt(r) for r in rest)
    return reason
