"""Which sandbox drivers work on this machine, and why one does not: ``qbus doctor``.

Each check really runs something — a job in a ``process`` worker, a trivial Python start
inside bubblewrap, then a job in a ``bwrap`` worker — because "installed" is not
"works": a kernel or container can refuse the namespaces bwrap asks for.
"""

from __future__ import annotations

import shutil
import time

import msgspec

from qbus.engines.base import RunRequest
from qbus.engines.reference import ReferenceEngine
from qbus.errors import QbusError
from qbus.hypervisor import make_sandbox
from qbus.hypervisor.base import RunLimits
from qbus.hypervisor.bwrap import INSTALL_HINT, check_python
from qbus.schemas.ir import Circuit, Op

# A one-qubit job on the reference engine: no optional framework needed.
_PROBE = RunRequest(
    circuit=Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,))),
    ),
    shots=10,
)
_LIMITS = RunLimits(memory_mb=256, cpu_seconds=10, wall_seconds=30)

_USERNS_HINT = (
    "the kernel refused the namespaces bwrap needs; as root this works in most "
    "containers only with --privileged or a seccomp profile that allows unshare/clone; "
    "for non-root users enable unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu 24.04+ "
    "kernel.apparmor_restrict_unprivileged_userns=0)"
)


class DriverCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One driver's verdict.

    Attributes:
        driver: ``inline``, ``process`` or ``bwrap``.
        works: Whether a job ran under it.
        detail: Timing when it works; what failed and how to fix it when not.
    """

    driver: str
    works: bool
    detail: str


def _run_job(driver: str) -> DriverCheck:
    sandbox = make_sandbox(driver, 1, ["qbus.engines.reference:ReferenceEngine"])
    try:
        start = time.perf_counter()
        sandbox.run(ReferenceEngine(), _PROBE, _LIMITS)  # starts the worker
        cold = time.perf_counter() - start
        start = time.perf_counter()
        sandbox.run(ReferenceEngine(), _PROBE, _LIMITS)
        warm = time.perf_counter() - start
    except QbusError as exc:
        return DriverCheck(driver=driver, works=False, detail=f"{exc.code}: {exc}")
    finally:
        sandbox.close()
    return DriverCheck(
        driver=driver,
        works=True,
        detail=f"worker start {cold * 1e3:.0f} ms, warm job {warm * 1e3:.1f} ms",
    )


def check_drivers() -> list[DriverCheck]:
    """Try every driver; never raises."""
    checks = [
        DriverCheck(driver="inline", works=True, detail="in the executor; no isolation"),
        _run_job("process"),
    ]
    if shutil.which("bwrap") is None:
        checks.append(
            DriverCheck(
                driver="bwrap",
                works=False,
                detail=f"bubblewrap is not installed; {INSTALL_HINT} or run scripts/setup.sh",
            )
        )
        return checks
    ok, why = check_python()
    if not ok:
        hint = _USERNS_HINT if "namespace" in why.lower() or "permission" in why.lower() else ""
        detail = f"bwrap failed: {why}" + (f"; {hint}" if hint else "")
        checks.append(DriverCheck(driver="bwrap", works=False, detail=detail))
        return checks
    checks.append(_run_job("bwrap"))
    return checks
