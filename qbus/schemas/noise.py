"""The job's noise model: a small, engine-neutral description mapped to each engine.

Semantics (docs/engines.md, "Noise", is the reference): after every gate, on the qubits
that gate touches,

1. a depolarising channel in the **Pauli convention**: with probability ``p`` one of the
   ``4**k - 1`` non-identity Pauli strings on the gate's ``k`` qubits, chosen uniformly,
   is applied; ``p = depolarizing_1q`` for one-qubit gates and ``depolarizing_2q`` for
   gates on two or more qubits. Equivalently ``ρ ↦ (1 - λ) ρ + λ Tr_k(ρ) ⊗ I/2**k`` with
   ``λ = p · 4**k / (4**k - 1)``;
2. then amplitude damping with ``gamma`` on each of those qubits (Kraus
   ``[[1, 0], [0, sqrt(1-γ)]]`` and ``[[0, sqrt(γ)], [0, 0]]``).

Measurements, resets and barriers get no gate noise. Readout error flips each measured
bit classically with the given probabilities; it does not change expectation values.
Engines that cannot simulate the model reject the job with ``noise_unsupported``
before running.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class ReadoutError(msgspec.Struct, frozen=True, kw_only=True):
    """Classical bit-flip on measuring ``qubit``.

    Attributes:
        qubit: The measured qubit.
        p01: Probability of reading 1 when the qubit is in 0.
        p10: Probability of reading 0 when the qubit is in 1.
    """

    qubit: Annotated[int, msgspec.Meta(ge=0)]
    p01: Probability = 0.0
    p10: Probability = 0.0

    def confusion(self) -> list[list[float]]:
        """``[[P(read 0|0), P(read 1|0)], [P(read 0|1), P(read 1|1)]]`` (rows: true value)."""
        return [[1.0 - self.p01, self.p01], [self.p10, 1.0 - self.p10]]


class NoiseModel(msgspec.Struct, frozen=True, kw_only=True):
    """Noise applied by engines that support it (see the module doc for the semantics).

    Attributes:
        depolarizing_1q: Depolarising probability after each one-qubit gate.
        depolarizing_2q: Depolarising probability after each gate on two or more qubits
            (on all of its qubits together).
        amplitude_damping: Damping probability (gamma) on each qubit a gate touches,
            after the gate.
        readout: Per-qubit readout errors (at most one entry per qubit).
    """

    depolarizing_1q: Probability = 0.0
    depolarizing_2q: Probability = 0.0
    amplitude_damping: Probability = 0.0
    readout: list[ReadoutError] = []

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for r in self.readout:
            if r.qubit in seen:
                raise ValueError(f"readout error given twice for qubit {r.qubit}")
            seen.add(r.qubit)

    def is_trivial(self) -> bool:
        """True when no channel has a non-zero probability."""
        return (
            self.depolarizing_1q == 0.0
            and self.depolarizing_2q == 0.0
            and self.amplitude_damping == 0.0
            and all(r.p01 == 0.0 and r.p10 == 0.0 for r in self.readout)
        )

    def has_gate_noise(self) -> bool:
        """True when some channel acts after gates (depolarising or damping)."""
        return bool(self.depolarizing_1q or self.depolarizing_2q or self.amplitude_damping)

    def depolarizing(self, arity: int) -> float:
        """The depolarising probability after a gate on ``arity`` qubits."""
        return self.depolarizing_1q if arity == 1 else self.depolarizing_2q

    def readout_errors(self) -> dict[int, ReadoutError]:
        """Readout errors by qubit, the trivial ones left out."""
        return {r.qubit: r for r in self.readout if r.p01 or r.p10}

    def problem(self, num_qubits: int) -> tuple[str, str] | None:
        """Why the model does not fit a ``num_qubits``-qubit circuit, as (message, where).

        Returns:
            None when it fits.
        """
        for i, r in enumerate(self.readout):
            if r.qubit >= num_qubits:
                return (
                    f"readout error on qubit {r.qubit}, but the circuit has {num_qubits} qubit(s)",
                    f"$.noise.readout[{i}].qubit",
                )
        return None


def is_noisy(noise: NoiseModel | None) -> bool:
    """True when ``noise`` is given and not trivial."""
    return noise is not None and not noise.is_trivial()
