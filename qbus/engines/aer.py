"""The qiskit-aer engine: IR -> ``QuantumCircuit`` -> one long-lived ``AerSimulator``.

Qiskit and Aer are imported here (and in ``convert_qiskit``) only; without them,
importing this module raises ``MissingOptionalLibraryError`` with the
``pip install 'qbus[qiskit]'`` hint, which the registry passes on.

Per-job overhead is kept low by building the ``QuantumCircuit`` directly from
``CircuitInstruction``s, skipping ``transpile`` unless the circuit holds a gate Aer
does not run natively (``ch`` is the one in the IR library today), and reading counts
straight from the experiment result instead of through ``Result.get_counts``.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.errors import EngineError, MissingOptionalLibraryError
from qbus.schemas.gates import GATES

try:
    import qiskit_aer
    from qiskit import transpile
    from qiskit.circuit import CircuitInstruction
    from qiskit_aer import AerSimulator
    from qiskit_aer.library import SaveStatevector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("qiskit-aer", "qiskit", "the qiskit-aer engine") from exc

from qbus.engines.convert_qiskit import GATE_CLASSES, to_qiskit
from qbus.engines.reference import check_terminal_measurements


def _qiskit_name(ir_name: str) -> str:
    spec = GATES[ir_name]
    return GATE_CLASSES[ir_name](*([0.0] * spec.num_params)).name


_PARALLEL_QUBITS = 14


class AerEngine(Engine):
    """Qiskit Aer's ``AerSimulator`` (method ``automatic``) as a qbus engine.

    ``sample`` runs the circuit with ``shots`` and ``seed_simulator=seed``; Aer picks
    stabilizer, statevector or another method per circuit. ``statevector`` drops the
    (terminal) measurements, saves the final state and returns it as ``complex128``.
    """

    name = "qiskit-aer"

    def __init__(self) -> None:
        """Create the engine's single simulator and read its basis and size once."""
        self._sim = AerSimulator(method="automatic")
        # The executor runs jobs in worker threads; the simulator shares one C++
        # controller, which is not documented as safe for concurrent calls. Aer already
        # spreads one run over all cores with OpenMP, so serialising costs little.
        self._lock = threading.Lock()
        config = self._sim.configuration()
        basis = set(config.basis_gates)
        # IR gates Aer does not execute itself: a circuit holding one is transpiled to
        # Aer's basis first. Everything else goes to Aer as is.
        native = {n: _qiskit_name(n) for n in GATES}
        self._foreign = frozenset(n for n, q in native.items() if q not in basis)
        # The transpile target: only standard gates (transpile refuses Aer's own
        # instructions such as ``set_superop`` by name), so the IR's native gates.
        self._basis = sorted({q for q in native.values() if q in basis})
        # Aer sizes n_qubits from the machine's memory (statevector of complex128).
        width = int(config.n_qubits)
        self.capabilities = Capabilities(
            methods=("sample", "statevector"),
            max_qubits={"sample": width, "statevector": width},
            gates=tuple(GATES),
            noise=False,
            batching=False,
            device="cpu",
        )

    @property
    def version(self) -> str:
        """The installed qiskit-aer version."""
        return str(qiskit_aer.__version__)

    def validate(self, request: RunRequest) -> None:
        """The base checks; for ``statevector`` also that measurements are terminal.

        ``sample`` accepts mid-circuit measurements and resets: Aer runs them shot by
        shot.

        Raises:
            EngineError: As ``Engine.validate``.
            CircuitError: ``unbound_parameter``; ``mid_circuit_measurement`` for
                ``statevector``.
        """
        super().validate(request)
        if request.method == "statevector":
            check_terminal_measurements(request.circuit)

    def run(self, request: RunRequest) -> EngineResult:
        """Validate, convert and run ``request`` on the engine's simulator.

        Raises:
            EngineError: From ``validate``; ``simulation_failed`` (retryable) when Aer
                reports a failure.
            CircuitError: From ``validate``.
        """
        self.validate(request)
        start = time.perf_counter()
        circuit = request.circuit
        sv = request.method == "statevector"
        qc = to_qiskit(circuit, request.parameters, measurements=not sv)
        if self._foreign and any(op.name in self._foreign for op in circuit.ops):
            qc = transpile(qc, basis_gates=self._basis, optimization_level=0)
        if sv:
            # After transpiling: save_statevector is Aer's own instruction, unknown to
            # the transpiler's standard basis.
            qc._append(CircuitInstruction(SaveStatevector(qc.num_qubits), tuple(qc.qubits), ()))
        shots = 1 if sv else request.shots
        with self._lock:
            result = self._sim.run(
                qc,
                shots=shots,
                seed_simulator=request.seed,
                # Below Aer's own parallel threshold one thread is all a run uses, but an
                # OpenMP pool still spins on every core: on a busy machine (the other
                # stages, nats-server) that made a Bell job 15x slower.
                max_parallel_threads=1 if circuit.num_qubits < _PARALLEL_QUBITS else 0,
            ).result()
        if not result.success:
            raise EngineError(
                f"qiskit-aer failed: {result.status}", code="simulation_failed", retryable=True
            )
        data = result.results[0].data
        if sv:
            state = np.asarray(data.statevector, dtype=np.complex128)
            return EngineResult(
                counts=None,
                statevector=state,
                seed=request.seed,
                run_seconds=time.perf_counter() - start,
            )
        # Aer's raw counts are keyed by hex ("0x3"); with one classical register the
        # integer's binary form, padded to the clbit count, is the IR's bitstring.
        fmt = f"0{circuit.num_clbits}b"
        counts = {format(int(key, 16), fmt): int(n) for key, n in data.counts.items()}
        return EngineResult(
            counts=counts,
            statevector=None,
            seed=request.seed,
            run_seconds=time.perf_counter() - start,
        )
