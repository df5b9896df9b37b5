"""Sandbox overhead: one 5-qubit job under ``inline``, a warm ``process`` pool and ``bwrap``.

Runs the same GHZ-5 sampling request N times on the qiskit-aer engine through each
driver's ``run(engine, request, limits)`` (workers started and warmed first) and prints
p50/p99 milliseconds per job and the p50 overhead over ``inline``.

    python benchmarks/sandbox.py --runs 200
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.qasm import parse_qasm
from qbus.hypervisor import make_sandbox
from qbus.hypervisor.base import RunLimits

GHZ5 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[5];
creg c[5];
h q[0];
cx q[0], q[1];
cx q[1], q[2];
cx q[2], q[3];
cx q[3], q[4];
measure q -> c;
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_driver(driver: str, runs: int, shots: int) -> list[float]:
    """Milliseconds per job under ``driver``, after a warm-up run."""
    engine = get_engine("qiskit-aer")
    circuit, _ = parse_qasm(GHZ5)
    request = RunRequest(circuit=circuit, shots=shots, seed=1)
    limits = RunLimits(memory_mb=1024, cpu_seconds=30, wall_seconds=30)
    sandbox = make_sandbox(driver, 1, ["qbus.engines.aer:AerEngine"])
    try:
        for _ in range(3):
            sandbox.run(engine, request, limits)  # starts and warms the worker
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = sandbox.run(engine, request, limits)
            times.append((time.perf_counter() - start) * 1e3)
            assert sum(result.counts.values()) == shots
        return times
    finally:
        sandbox.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shots", type=int, default=1000)
    args = parser.parse_args()
    drivers = ["inline", "process"] + (["bwrap"] if shutil.which("bwrap") else [])
    if "bwrap" not in drivers:
        print("bwrap not installed: skipping it (scripts/setup.sh installs it)", file=sys.stderr)
    print(f"{'driver':<10} {'p50 ms':>8} {'p99 ms':>8} {'overhead ms':>12} {'ratio':>7}")
    base = None
    for driver in drivers:
        times = time_driver(driver, args.runs, args.shots)
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        base = p50 if base is None else base
        print(f"{driver:<10} {p50:>8.2f} {p99:>8.2f} {p50 - base:>12.2f} {p50 / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
