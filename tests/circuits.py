"""The random circuits the engine tests share: one generator instead of a copy per file."""

from __future__ import annotations

import math

import numpy as np

from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op


def random_circuit(
    rng: np.random.Generator,
    n: int,
    depth: int,
    measure: bool = False,
    *,
    barrier_rate: float = 0.05,
    full_barriers: bool = False,
) -> Circuit:
    """``depth`` random gates of the whole library on random (permuted) qubits.

    Args:
        rng: The generator (the same seed gives the same circuit).
        n: Qubits.
        depth: Instructions drawn.
        measure: End by measuring every qubit, qubit q into clbit n-1-q.
        barrier_rate: Chance that an instruction is a barrier instead (0: no barriers,
            and no draw for them).
        full_barriers: A barrier spans every qubit (else two random ones).
    """
    names = [g for g in GATES if GATES[g].num_qubits <= n]
    ops = []
    for _ in range(depth):
        if barrier_rate and rng.random() < barrier_rate:
            if full_barriers:
                qubits = tuple(range(n))
            else:
                qubits = tuple(sorted(int(q) for q in rng.permutation(n)[:2]))
            ops.append(Op(name="barrier", qubits=qubits))
            continue
        name = names[rng.integers(len(names))]
        spec = GATES[name]
        qubits = tuple(int(q) for q in rng.permutation(n)[: spec.num_qubits])
        params = tuple(float(a) for a in rng.uniform(-2 * math.pi, 2 * math.pi, spec.num_params))
        ops.append(Op(name=name, qubits=qubits, params=params))
    if measure:
        ops += [Op(name="measure", qubits=(q,), clbits=(n - 1 - q,)) for q in range(n)]
    return Circuit(num_qubits=n, num_clbits=n if measure else 0, ops=tuple(ops))
