"""The ``dynamics`` method: open-system time evolution under a Pauli-sum Hamiltonian.

The job's circuit prepares the initial state (an empty circuit starts from |0…0⟩;
measurements are ignored); the engine then integrates the Lindblad master equation
``dρ/dt = -i[H, ρ] + Σ_k (L_k ρ L_k† - ½{L_k† L_k, ρ})`` and reports the expectation of
each observable at each requested time. Time is in units where ħ = 1.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from qbus.schemas.enums import CollapseKind
from qbus.schemas.pauli import Observable, PauliTerm

MAX_TIMES = 10_000
"""Most report times one job may ask for."""


class CollapseOperator(msgspec.Struct, frozen=True, kw_only=True):
    """One Lindblad operator ``L = sqrt(rate) * op``.

    Attributes:
        kind: ``dephasing`` (op = Z on ``qubit``), ``decay`` (op = σ⁻ = |0⟩⟨1| on
            ``qubit``), ``excitation`` (σ⁺ = |1⟩⟨0|) or ``pauli`` (op = the Pauli string
            ``pauli``).
        rate: Non-negative rate (the square root is taken for ``L``).
        qubit: The qubit for the single-qubit kinds.
        pauli: The Pauli string for ``kind="pauli"``, e.g. ``"X0 X1"``.
    """

    kind: CollapseKind
    rate: Annotated[float, msgspec.Meta(ge=0.0)]
    qubit: int | None = None
    pauli: str = ""

    def factors(self) -> list[tuple[str, int]]:
        """(Pauli letter, qubit) pairs of a ``pauli`` operator (identities dropped)."""
        return PauliTerm(coeff=1.0, pauli=self.pauli).factors()


class DynamicsSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to evolve and what to report.

    Attributes:
        hamiltonian: H as a Pauli sum.
        times: Times at which to report, ascending, the first being the start (the
            initial state is taken to be the state at ``times[0]``).
        observables: Expectation values reported at each time.
        collapse: Lindblad operators (none: closed-system Schrödinger evolution).
    """

    hamiltonian: Observable
    times: list[float]
    observables: list[Observable]
    collapse: list[CollapseOperator] = []

    def problem(self, num_qubits: int) -> tuple[str, str] | None:
        """Why the spec cannot run on a ``num_qubits``-qubit register, as (message, where).

        Returns:
            None when the spec is well formed.
        """
        times = self.times
        if not times:
            return "'times' is empty: give the report times, the first being the start", (
                "$.dynamics.times"
            )
        if len(times) > MAX_TIMES:
            return f"{len(times):,} report times; the limit is {MAX_TIMES:,}", "$.dynamics.times"
        for i, t in enumerate(times):
            if not math.isfinite(t):
                return f"time {t!r} is not a finite number", f"$.dynamics.times[{i}]"
            if i and t <= times[i - 1]:
                return (
                    f"times must be strictly ascending: times[{i}] = {t} follows {times[i - 1]}",
                    f"$.dynamics.times[{i}]",
                )
        if not self.observables:
            return "give at least one observable to report", "$.dynamics.observables"
        observables = [("hamiltonian", self.hamiltonian)] + [
            (f"observables[{i}]", o) for i, o in enumerate(self.observables)
        ]
        for path, obs in observables:
            if path != "hamiltonian" and not obs.terms:
                return "an observable with no terms", f"$.dynamics.{path}.terms"
            for j, term in enumerate(obs.terms):
                if not math.isfinite(term.coeff):
                    return f"coefficient {term.coeff!r} is not finite", (
                        f"$.dynamics.{path}.terms[{j}].coeff"
                    )
                for _, q in term.factors():
                    if q >= num_qubits:
                        return (
                            f"term {term.pauli!r} acts on qubit {q}, but the circuit has "
                            f"{num_qubits} qubit(s)",
                            f"$.dynamics.{path}.terms[{j}].pauli",
                        )
        for i, c in enumerate(self.collapse):
            where = f"$.dynamics.collapse[{i}]"
            if not math.isfinite(c.rate):
                return f"rate {c.rate!r} is not finite", f"{where}.rate"
            if c.kind == "pauli":
                try:
                    factors = c.factors()
                except ValueError as exc:
                    return str(exc), f"{where}.pauli"
                if not factors:
                    return "a 'pauli' collapse operator needs a Pauli string", f"{where}.pauli"
                for _, q in factors:
                    if q >= num_qubits:
                        return (
                            f"collapse operator {c.pauli!r} acts on qubit {q}, but the circuit "
                            f"has {num_qubits} qubit(s)",
                            f"{where}.pauli",
                        )
            elif c.qubit is None or not 0 <= c.qubit < num_qubits:
                return (
                    f"a {c.kind!r} collapse operator needs 'qubit' in 0..{num_qubits - 1}, "
                    f"got {c.qubit}",
                    f"{where}.qubit",
                )
        return None


class DynamicsResult(msgspec.Struct, frozen=True, kw_only=True):
    """Expectation values over time: ``values[k][t]`` for observable k at ``times[t]``."""

    times: list[float]
    values: list[list[float]]
