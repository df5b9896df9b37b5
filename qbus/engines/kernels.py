"""Numpy kernels shared by the engines and the exact references.

``apply_matrix`` is the one gate application of the state-vector reference and of the
density-matrix reference (which applies superoperators to ρ viewed as a ``2n``-qubit
state); ``draw_counts`` is the one way counts are drawn from an exact distribution, so
engines that sample the same distribution with the same seed give the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def apply_matrix(psi: np.ndarray, m: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """Apply matrix ``m`` to ``qubits`` of the flat state ``psi`` (returns a new flat array).

    Args:
        psi: Flat state of ``n`` qubits, qubit 0 the least significant bit.
        m: ``2**k x 2**k`` matrix in Qiskit's convention (the first listed qubit is the
            least significant bit of the matrix index).
        qubits: The ``k`` qubits ``m`` acts on.
        n: Number of qubits of ``psi``.
    """
    k = len(qubits)
    if k == 1:
        q = qubits[0]
        if q < 4:
            # Few low bits: matmul's broadcast stack would be of tiny (2, 2^q) products.
            # One dense (N / 2^(q+1), 2^(q+1)) product with kron(m, I) is far faster.
            low = 1 << q
            big = np.kron(m, np.eye(low)) if low > 1 else m
            return (psi.reshape(-1, 2 * low) @ big.T).reshape(-1)
        # (high bits, this qubit, low bits); matmul broadcasts m over the leading axis.
        view = psi.reshape(1 << (n - 1 - q), 2, 1 << q)
        return np.matmul(m, view).reshape(-1)
    if k == 2:
        a, b = qubits
        hi, lo = (a, b) if a > b else (b, a)
        view = psi.reshape(1 << (n - 1 - hi), 2, 1 << (hi - lo - 1), 2, 1 << lo)
        # m.reshape(2,2,2,2) has axes (out_q1, out_q0, in_q1, in_q0); order them (hi, lo).
        m4 = m.reshape(2, 2, 2, 2)
        if a > b:  # q0 is the high qubit: swap the two qubit roles
            m4 = m4.transpose(1, 0, 3, 2)
        out = np.tensordot(m4, view, axes=([2, 3], [1, 3]))  # (hi, lo, A, B, C)
        return out.transpose(2, 0, 3, 1, 4).reshape(-1)
    # General case on the [2]*n tensor: m's input axes are (q_{k-1}, ..., q0).
    tensor = psi.reshape((2,) * n)
    axes = [n - 1 - q for q in reversed(qubits)]
    out = np.tensordot(m.reshape((2,) * (2 * k)), tensor, axes=(list(range(k, 2 * k)), axes))
    return np.moveaxis(out, list(range(k)), axes).reshape(-1)


def draw_counts(dist: Mapping[str, float], shots: int, seed: int) -> dict[str, int]:
    """``shots`` draws from ``dist`` with ``numpy.random.default_rng(seed)``.

    The outcomes are drawn in sorted key order, so the counts depend only on the
    distribution, the shots and the seed.
    """
    keys = sorted(dist)
    p = np.fromiter((dist[k] for k in keys), dtype=np.float64, count=len(keys))
    p /= p.sum()  # multinomial insists on a sum of at most 1
    draws = np.random.default_rng(seed).multinomial(shots, p)
    return {k: int(c) for k, c in zip(keys, draws, strict=True) if c}


def little_endian(state: np.ndarray, n: int) -> np.ndarray:
    """A big-endian state (qubit 0 the MSB, as Braket and PennyLane give it) in the IR's
    order (qubit 0 the LSB), as a contiguous ``complex128`` array.

    As a ``[2] * n`` tensor qubit ``q`` of a big-endian state is axis ``q``; the IR wants
    it at axis ``n - 1 - q``, so the axes are reversed.
    """
    tensor = np.asarray(state, dtype=np.complex128).reshape((2,) * n)
    return np.ascontiguousarray(tensor.transpose(range(n - 1, -1, -1)).reshape(-1))


def big_endian_matrix(m: np.ndarray) -> np.ndarray:
    """A gate matrix in the big-endian convention (the first listed qubit the MSB).

    For frameworks whose subsystem or wire order makes the first qubit the most
    significant bit (QuTiP, PennyLane); ``m`` is in the IR's (Qiskit's) convention.
    """
    k = m.shape[0].bit_length() - 1
    axes = [*reversed(range(k)), *reversed(range(k, 2 * k))]
    return np.asarray(m).reshape((2,) * (2 * k)).transpose(axes).reshape(m.shape)


__all__ = ["apply_matrix", "big_endian_matrix", "draw_counts", "little_endian"]
