"""What every sandbox driver shares: the interface, run limits, and the driver policy.

A driver runs one engine request somewhere, under some isolation::

    result = driver.run(engine, request, limits)   # EngineResult, or raises SandboxFailure

The execute stage only sees this interface, so a stronger driver (a Firecracker or Kata
microVM running the same worker) plugs in without touching any stage.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from qbus.bus.config import HypervisorConfig
from qbus.engines.base import Engine, EngineResult, RunRequest
from qbus.errors import LimitError
from qbus.schemas.enums import DRIVERS

STATE_OVERHEAD_MB = 64
"""Memory a run needs beyond its state vector (interpreter, engine buffers), MiB."""


class RunLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Resource limits of one run; ``inline`` cannot enforce them, so ``choose_driver``
    gives it only jobs that set none and are small.

    Attributes:
        memory_mb: Memory the run may add to the warm worker's, MiB.
        cpu_seconds: CPU time of the run, all threads together.
        wall_seconds: Wall-clock time of the run.
        open_files: Open file descriptors.
    """

    memory_mb: int = 4096
    cpu_seconds: float = 600.0
    wall_seconds: float = 600.0
    open_files: int = 256


class Sandbox(Protocol):
    """Runs one engine request under some isolation.

    Attributes:
        name: The driver's name (``inline``, ``process``, ``bwrap``).
    """

    name: str

    def run(self, engine: Engine, request: RunRequest, limits: RunLimits) -> EngineResult:
        """Run ``request`` on ``engine`` within ``limits``.

        Raises:
            SandboxFailure: The sandbox stopped the run (``memory_limit``, ``cpu_limit``,
                ``wall_timeout``, ``sandbox_violation``, ``worker_died``) or cannot run here.
            EngineError, CircuitError: The engine refused or failed, as inline.
        """
        ...

    def close(self) -> None:
        """Stop any worker processes."""
        ...


def statevector_mb(num_qubits: int) -> float:
    """MiB a dense state vector of ``num_qubits`` takes (16 B per amplitude)."""
    return 16 * 2**num_qubits / 2**20


def choose_driver(
    requested: str,
    engine: str,
    config: HypervisorConfig,
    *,
    limited: bool = False,
    num_qubits: int = 0,
) -> str:
    """The driver a job runs under.

    The job's choice, or for ``auto`` the engine's policy default, or the operator's
    default; ``inline`` becomes ``process`` for a job that sets a limit or is wider
    than ``inline_max_qubits`` (``inline`` enforces no limit, and a wide job is where
    one matters); then raised to the operator's minimum when weaker.

    Args:
        requested: The job's ``hypervisor`` field.
        engine: The engine that runs it.
        config: The operator's policy.
        limited: The job sets ``memory_mb``, ``cpu_seconds`` or ``wall_seconds``.
        num_qubits: The circuit's width.

    Raises:
        LimitError: ``unknown_hypervisor`` for a name that is no driver.
    """
    if requested == "auto":
        requested = config.engines.get(engine, config.default)
    if requested not in DRIVERS:
        raise LimitError(
            f"unknown hypervisor {requested!r}; use auto or one of {', '.join(DRIVERS)}",
            code="unknown_hypervisor",
            where="$.hypervisor",
        )
    if requested == "inline" and (limited or num_qubits > config.inline_max_qubits):
        requested = "process"
    return max(requested, config.minimum, key=DRIVERS.index)


def run_limits(
    config: HypervisorConfig,
    memory_mb: int | None = None,
    cpu_seconds: float | None = None,
    wall_seconds: float | None = None,
) -> RunLimits:
    """A job's limits: what it asked for, clamped to the operator's caps."""

    def clamp(asked: float | None, cap: float) -> float:
        return cap if asked is None or asked <= 0 else min(asked, cap)

    return RunLimits(
        memory_mb=int(clamp(memory_mb, config.max_memory_mb)),
        cpu_seconds=clamp(cpu_seconds, config.max_cpu_seconds),
        wall_seconds=clamp(wall_seconds, config.max_wall_seconds),
    )
