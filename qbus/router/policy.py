"""Engine choice. Today: the job's named engine, or the default for ``auto``."""

from __future__ import annotations

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
