"""The job's noise model: a small, engine-neutral description mapped to each engine.

A channel is applied after every gate on each qubit the gate touches (depolarising by
the gate's arity, amplitude damping per qubit); readout error flips a measured bit with
the given probabilities. Engines that cannot simulate a channel reject the job with
``noise_unsupported`` before running.
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


class NoiseModel(msgspec.Struct, frozen=True, kw_only=True):
    """Noise applied by engines that support it.

    Attributes:
        depolarizing_1q: Depolarising probability after each one-qubit gate.
        depolarizing_2q: Two-qubit depolarising probability after each two-qubit gate.
        amplitude_damping: Damping probability (gamma) on each qubit a gate touches,
            after the gate.
        readout: Per-qubit readout errors.
    """

    depolarizing_1q: Probability = 0.0
    depolarizing_2q: Probability = 0.0
    amplitude_damping: Probability = 0.0
    readout: list[ReadoutError] = []

    def is_trivial(self) -> bool:
        """True when no channel has a non-zero probability."""
        return (
            self.depolarizing_1q == 0.0
            and self.depolarizing_2q == 0.0
            and self.amplitude_damping == 0.0
            and all(r.p01 == 0.0 and r.p10 == 0.0 for r in self.readout)
        )
