"""The circuits of ``benchmarks/engines.py``: state-vector families and sweep ansätze.

Every circuit is an IR ``Circuit`` built from a fixed seed, so each engine (and each
library called directly) runs the very same gates. Only gates that Aer, qsim and jax
all run natively are used (no transpilation to a smaller basis hides in a timing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
import numpy as np

from qbus.schemas.ir import Circuit, Op
from qbus.schemas.pauli import Observable

DEPTH = 20
"""Layers of the ``random`` and ``layered`` families."""

TROTTER_STEPS = 1
"""Trotter steps of the ``trotter`` family: one step, as the issue asks."""


def layered_circuit(n: int, depth: int, rng: np.random.Generator) -> Circuit:
    """``depth`` layers of ry/rz on every qubit followed by a CNOT ladder."""
    ops: list[Op] = []
    for _ in range(depth):
        for q in range(n):
            ops.append(Op(name="ry", qubits=(q,), params=(float(rng.uniform(0, 6.28)),)))
            ops.append(Op(name="rz", qubits=(q,), params=(float(rng.uniform(0, 6.28)),)))
        ops.extend(Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1))
    return Circuit(num_qubits=n, ops=tuple(ops))


def random_circuit(n: int, depth: int, rng: np.random.Generator) -> Circuit:
    """Per layer a random rotation on every qubit, then cx/cz on a random pairing."""
    ops: list[Op] = []
    for _ in range(depth):
        for q in range(n):
            gate = ("rx", "ry", "rz")[int(rng.integers(3))]
            ops.append(Op(name=gate, qubits=(q,), params=(float(rng.uniform(0, 6.28)),)))
        order = rng.permutation(n)
        for a, b in zip(order[0::2], order[1::2], strict=False):
            ops.append(Op(name=("cx", "cz")[int(rng.integers(2))], qubits=(int(a), int(b))))
    return Circuit(num_qubits=n, ops=tuple(ops))


def qft_circuit(n: int, rng: np.random.Generator) -> Circuit:
    """The quantum Fourier transform (controlled phases, final swaps) of a product state."""
    ops = [Op(name="rx", qubits=(q,), params=(float(rng.uniform(0, 6.28)),)) for q in range(n)]
    for j in reversed(range(n)):
        ops.append(Op(name="h", qubits=(j,)))
        for k in reversed(range(j)):
            ops.append(Op(name="cp", qubits=(k, j), params=(math.pi / 2 ** (j - k),)))
    ops.extend(Op(name="swap", qubits=(q, n - 1 - q)) for q in range(n // 2))
    return Circuit(num_qubits=n, ops=tuple(ops))


def ghz_circuit(n: int, rng: np.random.Generator) -> Circuit:
    """``h`` then a CNOT chain: the shallowest family, close to the memory floor."""
    del rng  # no randomness; the signature is the families' own
    ops = [Op(name="h", qubits=(0,))]
    ops.extend(Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1))
    return Circuit(num_qubits=n, ops=tuple(ops))


def trotter_circuit(n: int, rng: np.random.Generator) -> Circuit:
    """A Trotter step of the 1-D transverse-field Ising model from ``|+…+>``.

    ``exp(-i dt J Σ Z_i Z_i+1)`` as ``rzz`` on the chain's bonds, then
    ``exp(-i dt h Σ X_i)`` as ``rx`` on every qubit (J = 1, h = 0.7, dt = 0.1).
    """
    del rng
    dt, coupling, field = 0.1, 1.0, 0.7
    ops = [Op(name="h", qubits=(q,)) for q in range(n)]
    for _ in range(TROTTER_STEPS):
        for parity in (0, 1):
            ops.extend(
                Op(name="rzz", qubits=(q, q + 1), params=(2 * coupling * dt,))
                for q in range(parity, n - 1, 2)
            )
        ops.extend(Op(name="rx", qubits=(q,), params=(2 * field * dt,)) for q in range(n))
    return Circuit(num_qubits=n, ops=tuple(ops))


FAMILIES: dict[str, Callable[[int, np.random.Generator], Circuit]] = {
    "random": lambda n, rng: random_circuit(n, DEPTH, rng),
    "qft": qft_circuit,
    "layered": lambda n, rng: layered_circuit(n, DEPTH, rng),
    "ghz": ghz_circuit,
    "trotter": trotter_circuit,
}
"""State-vector families by name (``--families``): ``f(width, rng)`` -> circuit."""


def sweep_circuit(n: int = 12, num_params: int = 48) -> Circuit:
    """Hardware-efficient ansatz: ry(t_i)/rz(t_j) on every qubit and CNOT ladders."""
    ops: list[Op] = []
    k = 0
    while k < num_params:
        for gate in ("ry", "rz"):
            for q in range(n):
                if k < num_params:
                    ops.append(Op(name=gate, qubits=(q,), params=(f"t{k}",)))
                    k += 1
        ops.extend(Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(f"t{i}" for i in range(k)))


def qaoa_ring(n: int, layers: int = 3) -> Circuit:
    """QAOA for MaxCut on a ring: ``rzz(g_l)`` on every edge, ``rx(b_l)`` on every qubit."""
    ops = [Op(name="h", qubits=(q,)) for q in range(n)]
    names: list[str] = []
    for layer in range(layers):
        gamma, beta = f"g{layer}", f"b{layer}"
        names += [gamma, beta]
        ops.extend(Op(name="rzz", qubits=(q, (q + 1) % n), params=(gamma,)) for q in range(n))
        ops.extend(Op(name="rx", qubits=(q,), params=(beta,)) for q in range(n))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(names))


def brickwork(n: int, layers: int = 2) -> Circuit:
    """UCC-style brickwork: ``rxx``/``ryy``/``rzz`` with their own angle on each pair.

    Starts from the Néel state (``x`` on odd qubits), so the exchange rotations act.
    """
    ops = [Op(name="x", qubits=(q,)) for q in range(1, n, 2)]
    names: list[str] = []
    for layer in range(layers):
        for parity in (0, 1):
            for q in range(parity, n - 1, 2):
                for gate in ("rxx", "ryy", "rzz"):
                    name = f"{gate}_{layer}_{q}"
                    names.append(name)
                    ops.append(Op(name=gate, qubits=(q, q + 1), params=(name,)))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(names))


ANSATZE: dict[str, Callable[[int], Circuit]] = {
    "hea": lambda n: sweep_circuit(n, 6 * n),
    "qaoa-ring": qaoa_ring,
    "brickwork": brickwork,
}
"""Sweep ansätze by name (``--ansatze``): ``f(width)`` -> parametrised circuit."""


def ising_energy(n: int = 12) -> list[Observable]:
    """``sum Z_i Z_i+1 + 0.5 sum X_i``: the observable every sweep point reports."""
    terms = [{"coeff": 1.0, "pauli": f"Z{i} Z{i + 1}"} for i in range(n - 1)]
    terms += [{"coeff": 0.5, "pauli": f"X{i}"} for i in range(n)]
    return msgspec.convert([{"terms": terms}], list[Observable])


def sweep_points(circuit: Circuit, count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """``count`` random points of ``circuit``'s named angles."""
    names = circuit.parameters
    return [
        dict(zip(names, rng.uniform(0, 6.28, len(names)).tolist(), strict=True))
        for _ in range(count)
    ]
