"""Which jobs may go past the dense-state limits: those a tensor-network engine can run.

A state vector of n qubits takes 16·2^n bytes, so ingest refuses a job whose state
cannot fit the memory cap or that is wider than ``[limits] max_qubits``. A tensor-network
engine (``quimb-tn``, qbus/engines/tn_engine.py) holds no dense state: its memory grows
with the circuit's depth and connectivity, not its width. Ingest lets such a job through
(up to ``[limits] max_tn_qubits``), and the router decides: the tensor-network engine when
its predicted contraction cost is within limits, else a rejection carrying that cost
(docs/routing.md).
"""

from __future__ import annotations

from qbus.schemas.ir import Circuit, has_control_flow
from qbus.schemas.noise import NoiseModel, is_noisy

TN_ENGINES = ("quimb-tn",)
"""Engines shipped with qbus that hold no dense state (``Capabilities.holds_state``)."""

TN_METHODS = ("sample", "expectation")
"""Methods a tensor-network engine runs at any width (a dense ``statevector`` it cannot
return past a state vector's memory anyway)."""


def tensor_network_job(
    engine: str, method: str, noise: NoiseModel | None, circuit: Circuit, max_tn_qubits: int
) -> bool:
    """Whether a tensor-network engine could take the job whatever its width.

    Args:
        engine: The job's engine: ``auto`` or a tensor-network engine (a job that names
            a state-vector engine keeps the dense-state checks).
        method: The job's method.
        noise: Its noise model (a noisy run needs a density matrix: never).
        circuit: The circuit (classical control runs shot by shot on a state: never).
        max_tn_qubits: ``[limits] max_tn_qubits``; 0 turns the path off.
    """
    return (
        engine in ("auto", *TN_ENGINES)
        and method in TN_METHODS
        and not is_noisy(noise)
        and not has_control_flow(circuit)
        and circuit.num_qubits <= max_tn_qubits
    )


__all__ = ["TN_ENGINES", "TN_METHODS", "tensor_network_job"]
