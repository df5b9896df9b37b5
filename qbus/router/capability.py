"""Routing by what a job needs beyond a circuit: a noise model, or the ``dynamics`` method.

``engine="auto"`` picks an engine that can run the job; a named engine that cannot is
refused here, with the same code its executor would fail with, so the job ends at once
instead of after a trip to the executor.
"""

from __future__ import annotations

from qbus.engines.density import NOISE_ENGINES
from qbus.errors import Reject

NOISELESS_ENGINES = frozenset({"reference", "jax", "qsim"})
"""Engines shipped with qbus that cannot simulate noise."""

DYNAMICS_ENGINES = ("qutip", "jax")
"""Engines shipped with qbus that run the ``dynamics`` method, preferred first."""


def _simulates_noise(engine: str) -> bool:
    if engine in NOISE_ENGINES:
        return True
    if engine in NOISELESS_ENGINES:
        return False
    # A third-party engine: its capabilities say (loading it costs once per process).
    from qbus.engines.registry import get_engine

    try:
        return get_engine(engine).capabilities.noise
    except Exception:  # an engine that does not load cannot run the job either
        return False


def route_noisy(requested: str, engine: str, reason: str, installed: list[str]) -> tuple[str, str]:
    """The engine for a job with a non-trivial noise model.

    Args:
        requested: The job's ``engine`` field (``auto`` or a name).
        engine: What the default policy chose.
        reason: Its reason.
        installed: Installed engine names.

    Raises:
        Reject: ``noise_unsupported`` when the named engine cannot simulate noise, or
            no installed engine can.
    """
    if _simulates_noise(engine):
        return engine, reason
    if requested == "auto":
        for candidate in NOISE_ENGINES:
            if candidate in installed:
                return candidate, f"auto: noisy job, {engine!r} cannot simulate noise"
        raise Reject(
            f"the job has a noise model, but no installed engine simulates noise; install "
            f"one of {', '.join(NOISE_ENGINES)} (pip install 'qbus[qiskit]')",
            code="noise_unsupported",
            where="$.noise",
        )
    raise Reject(
        f"engine {engine!r} cannot simulate a noise model; engines that can: "
        f"{', '.join(NOISE_ENGINES)} (or leave engine 'auto')",
        code="noise_unsupported",
        where="$.engine",
    )


def route_dynamics(
    requested: str, engine: str, reason: str, installed: list[str]
) -> tuple[str, str]:
    """The engine for a ``dynamics`` job: for ``auto`` the first installed dynamics engine.

    A named engine is kept as is: its executor refuses the method with
    ``unsupported_method`` if it has no dynamics (third-party engines may).
    """
    if requested != "auto" or engine in DYNAMICS_ENGINES:
        return engine, reason
    for candidate in DYNAMICS_ENGINES:
        if candidate in installed:
            return candidate, "auto: dynamics job"
    raise Reject(
        "no installed engine runs method 'dynamics'; install qutip (pip install 'qbus[qutip]')",
        code="unsupported_method",
        where="$.method",
    )
