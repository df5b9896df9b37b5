"""Memory of a state-vector job by width: what an executor needs per qubit (docs/deploy.md).

Runs one statevector job (H on every qubit) per width on an engine under the ``process``
sandbox driver, which measures the run's peak resident memory (the warm worker's own
pages included), and prints it beside the state's own size, 16 B x 2^n, and the ratio of
each width's peak growth to the growth of the state.

    python benchmarks/statevector_memory.py --engine qiskit-aer --qubits 16 18 20 22 24
"""

from __future__ import annotations

import argparse
import sys

from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.qasm import parse_qasm
from qbus.hypervisor import make_sandbox
from qbus.hypervisor.base import RunLimits

MIB = 2**20


def program(qubits: int) -> str:
    """H on every qubit: a dense state with every amplitude non-zero."""
    return f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{qubits}];\n' + "".join(
        f"h q[{i}];\n" for i in range(qubits)
    )


def peak_rss_mb(engine_name: str, widths: list[int], memory_mb: int) -> list[float]:
    """Peak resident MiB of one statevector run per width, in a fresh child each time."""
    engine = get_engine(engine_name)
    sandbox = make_sandbox("process", 1, [])
    limits = RunLimits(memory_mb=memory_mb, cpu_seconds=600, wall_seconds=600)
    try:
        sandbox.run(
            engine, RunRequest(circuit=parse_qasm(program(2))[0], method="statevector"), limits
        )
        peaks = []
        for n in widths:
            request = RunRequest(circuit=parse_qasm(program(n))[0], method="statevector")
            result = sandbox.run(engine, request, limits)
            assert result.statevector is not None and len(result.statevector) == 2**n
            assert result.peak_rss_mb is not None
            peaks.append(result.peak_rss_mb)
        return peaks
    finally:
        sandbox.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="qiskit-aer")
    parser.add_argument("--qubits", type=int, nargs="+", default=[16, 18, 20, 22, 24])
    parser.add_argument("--memory-mb", type=int, default=8192, help="the run's memory limit")
    args = parser.parse_args()
    widths = sorted(args.qubits)
    peaks = peak_rss_mb(args.engine, widths, args.memory_mb)
    print(f"engine {args.engine}, process driver, peak RSS of one statevector run")
    print(f"{'qubits':>6} {'state MiB':>10} {'peak MiB':>9} {'growth / state growth':>22}")
    for i, (n, peak) in enumerate(zip(widths, peaks, strict=True)):
        state = 16 * 2**n / MIB
        ratio = ""
        if i:
            grown = 16 * (2**n - 2 ** widths[i - 1]) / MIB
            ratio = f"{(peak - peaks[i - 1]) / grown:.2f}"
        print(f"{n:>6} {state:>10.1f} {peak:>9.1f} {ratio:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
