"""Expectation values of Pauli-sum observables on a state vector (IR order: qubit 0 = LSB).

Every engine that returns a state vector supports the ``expectation`` method through this:
the executor asks the engine for the state and evaluates the observables here, so the
numbers are computed the same way whatever the engine.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from qbus.schemas.events import Observable, PauliTerm


def pauli_action(
    factors: Iterable[tuple[str, int]], index: np.ndarray, scale: complex = 1.0
) -> tuple[int, np.ndarray]:
    """A Pauli string as a bit flip and a phase: ``(P psi)[i] = phase[i] * psi[i ^ flip]``.

    Args:
        factors: The string's ``(letter, qubit)`` factors.
        index: ``np.arange(dim)`` of the state the string acts on.
        scale: The phase's starting value (a term's coefficient, to fold it in).
    """
    flip = 0
    phase = np.full(index.shape[0], scale, dtype=np.complex128)
    for letter, qubit in factors:
        bit = (index >> qubit) & 1
        if letter in "XY":
            flip |= 1 << qubit
        if letter == "Z":
            phase *= 1 - 2 * bit
        elif letter == "Y":
            # Y|0> = i|1>, Y|1> = -i|0>: the amplitude that lands on index i came from
            # index i ^ flip with bit value 1 - bit(i).
            phase *= np.where(bit == 1, 1j, -1j)
    return flip, phase


def pauli_expectation(state: np.ndarray, term: PauliTerm) -> float:
    """<state| P |state> for the Pauli string of ``term`` (its coefficient not applied)."""
    index = np.arange(state.shape[0])
    flip, phase = pauli_action(term.factors(), index)
    moved = state[index ^ flip] * phase
    return float(np.real(np.vdot(state, moved)))


def expectation_values(state: np.ndarray, observables: list[Observable]) -> list[float]:
    """One expectation value per observable: sum of coeff * <P> over its terms."""
    return [
        float(sum(t.coeff * pauli_expectation(state, t) for t in obs.terms)) for obs in observables
    ]


def max_qubit(observables: list[Observable]) -> int:
    """The highest qubit any observable acts on (-1 for none)."""
    return max((q for obs in observables for t in obs.terms for _, q in t.factors()), default=-1)
