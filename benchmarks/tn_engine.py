"""Timings of the quimb-tn engine (docs/engines.md#quimb-tn-tensor-networks).

    .venv/bin/python benchmarks/tn_engine.py

Each row: one ``Engine.run`` (validation with its cost prediction, then the run) in a
fresh process's engine, so the path search is included; the second GHZ row reuses
the cached trees.
"""

from __future__ import annotations

import random
import time

from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.errors import EngineError
from qbus.schemas.events import Observable, PauliTerm
from qbus.schemas.ir import Circuit, Op


def ghz(n: int, measure: bool = True) -> Circuit:
    ops = [Op(name="h", qubits=(0,))] + [Op(name="cx", qubits=(i, i + 1)) for i in range(n - 1)]
    if measure:
        ops += [Op(name="measure", qubits=(i,), clbits=(i,)) for i in range(n)]
    return Circuit(num_qubits=n, num_clbits=n if measure else 0, ops=tuple(ops))


def brickwork(n: int, layers: int, seed: int, all_to_all: bool = False) -> Circuit:
    """Per layer ``ry rz`` on every qubit, then CZs on neighbours (or random pairs)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for layer in range(layers):
        for q in range(n):
            ops.append(Op(name="ry", qubits=(q,), params=(rng.uniform(0, 6.28),)))
            ops.append(Op(name="rz", qubits=(q,), params=(rng.uniform(0, 6.28),)))
        if all_to_all:
            qs = list(range(n))
            rng.shuffle(qs)
            ops += [Op(name="cz", qubits=(qs[i], qs[i + 1])) for i in range(0, n - 1, 2)]
        else:
            ops += [Op(name="cz", qubits=(q, q + 1)) for q in range(layer % 2, n - 1, 2)]
    ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(n)]
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


def main() -> None:
    engine = get_engine("quimb-tn")
    xs = " ".join(f"X{q}" for q in range(50))
    cases = [
        ("ghz-50 sample 1000", RunRequest(circuit=ghz(50), shots=1000, seed=1)),
        ("ghz-50 sample 1000 (again)", RunRequest(circuit=ghz(50), shots=1000, seed=2)),
        (
            "ghz-50 expectation X^50, Z0 Z49",
            RunRequest(
                circuit=ghz(50, measure=False),
                method="expectation",
                observables=[
                    Observable(terms=[PauliTerm(coeff=1.0, pauli=xs)]),
                    Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0 Z49")]),
                ],
            ),
        ),
        ("brickwork 30q x4 sample 100", RunRequest(circuit=brickwork(30, 4, 1), shots=100)),
        ("brickwork 30q x4 sample 1000", RunRequest(circuit=brickwork(30, 4, 1), shots=1000)),
        (
            "scrambler 56q x12 (refused)",
            RunRequest(circuit=brickwork(56, 12, 1, all_to_all=True), shots=100),
        ),
    ]
    for name, request in cases:
        start = time.perf_counter()
        try:
            engine.run(request)
            outcome = "ran"
        except EngineError as exc:
            outcome = exc.code
        print(f"{name:36s} {time.perf_counter() - start:8.2f} s  {outcome}", flush=True)


if __name__ == "__main__":
    main()
