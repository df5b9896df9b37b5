"""Aer and qsim called directly, without qbus: the other side of the wrapper/direct ratio.

The library's own circuit is built here from the IR's gates with the library's own API
(not qbus's converters), once, before any timing; what is timed is only the library's
run and reading its state or expectation values, which is what a user of the library
would time. Settings are each library's best on a CPU:

- Aer: ``AerSimulator(method="statevector")`` with gate fusion on (its default), every
  core (``max_parallel_threads=0``), the circuit transpiled for the simulator and
  ``save_statevector``; a sweep is one ``run`` binding every point (``parameter_binds``)
  with the points spread over the cores (``max_parallel_experiments=0``).
- qsim: ``QSimSimulator`` with ``t`` = the machine's cores and gate fusion up to ``f``
  qubits (``max_fused_gate_size``; the benchmark runs several and reports the best).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import cirq
import numpy as np
import qsimcirq
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer import AerSimulator

from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable

CORES = os.cpu_count() or 1

_AER = AerSimulator(method="statevector", fusion_enable=True)


def qiskit_circuit(circuit: Circuit) -> tuple[QuantumCircuit, dict[str, Parameter]]:
    """The circuit with Qiskit's own methods (IR names are Qiskit's), named angles as
    ``Parameter``s."""
    qc = QuantumCircuit(circuit.num_qubits)
    params = {name: Parameter(name) for name in circuit.parameters}
    for op in circuit.ops:
        args = [params[p] if isinstance(p, str) else p for p in op.params]
        getattr(qc, op.name)(*args, *op.qubits)
    return qc, params


def aer_statevector(circuit: Circuit) -> Callable[[], np.ndarray]:
    """A call running ``circuit`` on Aer directly and returning its final state."""
    qc, _ = qiskit_circuit(circuit)
    qc = transpile(qc, _AER, optimization_level=0)
    qc.save_statevector()

    # Under 14 qubits Aer runs on one thread anyway, but an OpenMP pool on every core
    # still costs its start-up (qbus's engine does the same).
    threads = 1 if circuit.num_qubits < 14 else 0

    def run() -> np.ndarray:
        result = _AER.run(qc, shots=1, max_parallel_threads=threads).result()
        return np.asarray(result.get_statevector())

    return run


def _sparse_pauli(observable: Observable, n: int) -> SparsePauliOp:
    labels = []
    for term in observable.terms:
        letters = ["I"] * n
        for letter, qubit in term.factors():
            letters[n - 1 - qubit] = letter  # Qiskit's labels put qubit 0 last
        labels.append(("".join(letters), term.coeff))
    return SparsePauliOp.from_list(labels)


def aer_sweep(
    circuit: Circuit, observables: list[Observable], points: list[dict[str, float]]
) -> Callable[[], np.ndarray]:
    """A call running every point of a sweep in ONE Aer ``run`` (parameter binds)."""
    qc, params = qiskit_circuit(circuit)
    qc = transpile(qc, _AER, optimization_level=0)
    for i, obs in enumerate(observables):
        qc.save_expectation_value(_sparse_pauli(obs, circuit.num_qubits), qc.qubits, f"e{i}")
    binds = [{params[name]: [p[name] for p in points] for name in circuit.parameters}]
    labels = [f"e{i}" for i in range(len(observables))]

    def run() -> np.ndarray:
        result = _AER.run(
            [qc],
            parameter_binds=binds,
            shots=1,
            max_parallel_experiments=0,
            max_parallel_threads=0,
        ).result()
        return np.array(
            [[float(np.real(getattr(r.data, label))) for label in labels] for r in result.results]
        )

    return run


def _rot(pow_gate: Any, theta: float) -> Any:
    # exp(-i theta/2 P) == PowGate(exponent=theta/pi, global_shift=-0.5)
    return pow_gate(exponent=theta / math.pi, global_shift=-0.5)


_CIRQ: dict[str, Callable[..., Any]] = {
    "h": lambda: cirq.H,
    "x": lambda: cirq.X,
    "cx": lambda: cirq.CNOT,
    "cz": lambda: cirq.CZ,
    "swap": lambda: cirq.SWAP,
    "rx": cirq.rx,
    "ry": cirq.ry,
    "rz": cirq.rz,
    "cp": lambda t: cirq.CZPowGate(exponent=t / math.pi),
    "rzz": lambda t: _rot(cirq.ZZPowGate, t),
    "rxx": lambda t: _rot(cirq.XXPowGate, t),
    "ryy": lambda t: _rot(cirq.YYPowGate, t),
}


def cirq_circuit(circuit: Circuit) -> cirq.Circuit:
    """The circuit with Cirq's own gates on ``LineQubit``s (bound angles only)."""
    qubits = cirq.LineQubit.range(circuit.num_qubits)
    ops = [_CIRQ[op.name](*op.params).on(*(qubits[q] for q in op.qubits)) for op in circuit.ops]
    return cirq.Circuit(ops)


def qsim_statevector(circuit: Circuit, fuse: int) -> Callable[[], np.ndarray]:
    """A call running ``circuit`` on qsim directly (every core, fusion up to ``fuse``)."""
    program = cirq_circuit(circuit)
    # qbus's order: qubit 0 the least significant, so the states can be compared.
    order = list(reversed(cirq.LineQubit.range(circuit.num_qubits)))
    sim = qsimcirq.QSimSimulator(qsim_options={"t": CORES, "f": fuse})

    def run() -> np.ndarray:
        # The raw state, qsimcirq's fastest public path (``simulate`` wraps it in a
        # Cirq result whose ``final_state_vector`` renormalises it in four more passes).
        return sim.simulate_into_1d_array(program, qubit_order=order)[1]

    return run
