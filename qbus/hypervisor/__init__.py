"""Sandboxes that run engine code: ``inline``, ``process`` (rlimits) and ``bwrap`` (namespaces).

See docs/hypervisor.md for what each driver isolates and how a job's driver is chosen.
"""

from __future__ import annotations

from qbus.hypervisor.base import RunLimits, Sandbox, choose_driver, run_limits
from qbus.hypervisor.bwrap import BwrapSandbox
from qbus.hypervisor.inline import InlineSandbox
from qbus.hypervisor.process import ProcessSandbox

__all__ = ["RunLimits", "Sandbox", "choose_driver", "make_sandbox", "run_limits"]


def make_sandbox(
    driver: str,
    pool_size: int = 2,
    preload: list[str] | None = None,
    nice: int = 0,
    idle: bool = False,
) -> Sandbox:
    """A new sandbox of ``driver`` (workers start on first use or on ``warm()``); ``nice``
    lowers its workers' CPU priority and ``idle`` puts them under ``SCHED_IDLE`` (not
    ``inline``'s: it has no worker).

    Raises:
        ValueError: Unknown driver name.
    """
    match driver:
        case "inline":
            return InlineSandbox()
        case "process":
            return ProcessSandbox(pool_size, preload, nice, idle)
        case "bwrap":
            return BwrapSandbox(pool_size, preload, nice, idle)
    raise ValueError(f"unknown sandbox driver {driver!r}")
