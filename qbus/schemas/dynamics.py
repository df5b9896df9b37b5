"""The ``dynamics`` method: open-system time evolution under a Pauli-sum Hamiltonian.

The job's circuit prepares the initial state (an empty circuit starts from |0…0⟩); the
engine then integrates the Lindblad master equation
``dρ/dt = -i[H, ρ] + Σ_k (L_k ρ L_k† - ½{L_k† L_k, ρ})`` and reports the expectation of
each observable at each requested time.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from qbus.schemas.pauli import Observable


class CollapseOperator(msgspec.Struct, frozen=True, kw_only=True):
    """One Lindblad operator ``L = sqrt(rate) * op``.

    Attributes:
        kind: ``dephasing`` (op = Z on ``qubit``), ``decay`` (op = σ⁻ on ``qubit``),
            ``excitation`` (σ⁺) or ``pauli`` (op = the Pauli string ``pauli``).
        rate: Non-negative rate (the square root is taken for ``L``).
        qubit: The qubit for the single-qubit kinds.
        pauli: The Pauli string for ``kind="pauli"``, e.g. ``"X0 X1"``.
    """

    kind: str
    rate: Annotated[float, msgspec.Meta(ge=0.0)]
    qubit: int | None = None
    pauli: str = ""


class DynamicsSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to evolve and what to report.

    Attributes:
        hamiltonian: H as a Pauli sum.
        times: Times at which to report, ascending, the first being the start.
        observables: Expectation values reported at each time.
        collapse: Lindblad operators (none: closed-system Schrödinger evolution).
    """

    hamiltonian: Observable
    times: list[float]
    observables: list[Observable]
    collapse: list[CollapseOperator] = []


class DynamicsResult(msgspec.Struct, frozen=True, kw_only=True):
    """Expectation values over time: ``values[k][t]`` for observable k at ``times[t]``."""

    times: list[float]
    values: list[list[float]]
