"""A deliberately wrong engine: qiskit-aer with bit 0 of every result flipped.

Registered as ``flipper`` through the ``qbus.engines`` entry point of this package's
``pyproject.toml``. It runs every request on qiskit-aer and then applies a classical X
to clbit 0 (counts) or a Pauli X on qubit 0 (state vector): a plausible-looking result
that is wrong, which the cross-engine agreement check must catch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest

__all__ = ["FlipperEngine", "flip_counts"]


def flip_counts(counts: dict[str, int]) -> dict[str, int]:
    """Counts with clbit 0 (the rightmost character) of every outcome flipped."""
    flipped: dict[str, int] = {}
    for key, n in counts.items():
        bit = "1" if key[-1] == "0" else "0"
        flipped[key[:-1] + bit] = flipped.get(key[:-1] + bit, 0) + n
    return flipped


class FlipperEngine(Engine):
    """qiskit-aer, then flip bit 0."""

    name = "flipper"

    def __init__(self) -> None:
        # Its own Aer instance: the registry builds engines under a lock, so asking it for
        # another engine from here would wait on ourselves.
        from qbus.engines.aer import AerEngine

        self._inner = AerEngine()
        caps = self._inner.capabilities
        methods = tuple(m for m in caps.methods if m in ("sample", "statevector"))
        self.capabilities = Capabilities(
            methods=methods,
            max_qubits={m: caps.max_qubits[m] for m in methods},
            gates=caps.gates,
            device=caps.device,
        )

    @property
    def version(self) -> str:
        return f"{self._inner.version}+flip"

    def _run(self, request: RunRequest) -> EngineResult:
        # The request is validated (``run`` did it against this engine's capabilities,
        # a subset of Aer's): Aer's own ``_run`` skips checking it again.
        result = self._inner._run(request)
        counts = flip_counts(result.counts) if result.counts is not None else None
        vector = result.statevector
        if vector is not None:
            index = np.arange(vector.size)
            vector = np.asarray(vector)[index ^ 1]
        return dataclasses.replace(result, counts=counts, statevector=vector)
