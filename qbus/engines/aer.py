"""The qiskit-aer engine: IR -> ``QuantumCircuit`` -> one long-lived ``AerSimulator``.

Qiskit and Aer are imported here (and in ``convert_qiskit``) only; without them,
importing this module raises ``MissingOptionalLibraryError`` with the
``pip install 'qbus[qiskit]'`` hint, which the registry passes on.

Per-job overhead is kept low by building the ``QuantumCircuit`` directly from
``CircuitInstruction``s, skipping ``transpile`` unless the circuit holds a gate Aer
does not run natively (``ch`` is the one in the IR library today), and reading counts
straight from the experiment result instead of through ``Result.get_counts``.

A ``while`` runs under the reference's budget (``MAX_LOOP_ITERATIONS`` per entry):
``to_qiskit(loop_budget=…)`` bounds each loop with a counter and a flag clbit, and a
run in which any shot set a flag fails with ``loop_budget_exceeded``, as on the
reference, instead of spinning until the sandbox's time limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.branching import MAX_LOOP_ITERATIONS
from qbus.errors import CircuitError, EngineError, MissingOptionalLibraryError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, walk_ops

try:
    import qiskit_aer
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import CircuitInstruction, Parameter
    from qiskit.converters import circuit_to_dag, dag_to_circuit
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer import AerSimulator
    from qiskit_aer.library import SaveExpectationValue, SaveStatevector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("qiskit-aer", "qiskit", "the qiskit-aer engine") from exc

from qbus.engines.base import loop_sweep
from qbus.engines.convert_qiskit import GATE_CLASSES, loop_paths, to_qiskit
from qbus.engines.noise_aer import noise_names, run_noisy
from qbus.engines.sweep import point_parameters, point_seed, slot_table
from qbus.schemas.noise import is_noisy
from qbus.schemas.pauli import Observable
from qbus.schemas.sweep import SweepPoint


def _qiskit_name(ir_name: str) -> str:
    spec = GATES[ir_name]
    return GATE_CLASSES[ir_name](*([0.0] * spec.num_params)).name


_PARALLEL_QUBITS = 14

_PREPARED_CACHE = 256


def fusion_order(qc: QuantumCircuit) -> QuantumCircuit:
    """``qc`` with its gates in Qiskit's topological order (a DAG round trip).

    Aer fuses runs of consecutive gates from 14 qubits on. The IR lists a layer's gates
    qubit by qubit, then its two-qubit gates; the DAG's order keeps the gates on the
    same few qubits together, so Aer fuses bigger blocks: 20 % faster on random 22-qubit
    circuits and 11 % on QFT (the same gates and state; ``transpile`` gives the same
    order, which is why Aer called directly on a transpiled circuit was faster than
    qbus). The round trip costs well under a millisecond per circuit.
    """
    return dag_to_circuit(circuit_to_dag(qc))


class _CallerThread(Executor):
    """Runs each Aer job in the thread that submits it (Aer's ``executor`` option).

    Aer hands every job to a worker thread by default and the caller waits for it; the
    engine already runs in the executor's chosen thread, so the hand-off only added a
    thread wake-up (about a fifth of a small job's run).
    """

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


_IN_CALLER = _CallerThread()
"""Distinct circuits whose converted ``QuantumCircuit`` the engine keeps."""

# Aer 0.18 binds the parameters of controlled rotations wrongly (one result, with the
# wrong state, for a two-point bind of ``cry``): circuits holding one run as a list of
# bound circuits instead, still in one call.
_UNBINDABLE = frozenset({"cp", "crx", "cry", "crz", "cu"})


def _pauli_op(observable: Observable, num_qubits: int) -> SparsePauliOp:
    terms = [
        ("".join(p for p, _ in t.factors()), [q for _, q in t.factors()], t.coeff)
        for t in observable.terms
    ]
    return SparsePauliOp.from_sparse_list(terms, num_qubits=num_qubits)


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
        self._prepared_cache: OrderedDict[tuple, Any] = OrderedDict()
        config = self._sim.configuration()
        basis = set(config.basis_gates)
        # IR gates Aer does not execute itself: a circuit holding one is transpiled to
        # Aer's basis first. Everything else goes to Aer as is.
        native = {n: _qiskit_name(n) for n in GATES}
        self._foreign = frozenset(n for n, q in native.items() if q not in basis)
        # The transpile target: only standard gates (transpile refuses Aer's own
        # instructions such as ``set_superop`` by name), so the IR's native gates.
        self._basis = sorted({q for q in native.values() if q in basis})
        # Noisy runs may use Aer's density_matrix method, which runs fewer gates
        # (no crx, cu, csx, cswap …): those go to Aer as labelled unitaries instead.
        dm_basis = set(AerSimulator(method="density_matrix").configuration().basis_gates)
        self._noisy_foreign = frozenset(n for n, q in native.items() if q not in dm_basis)
        self._noise_names = noise_names(native, self._noisy_foreign)
        # Aer sizes n_qubits from the machine's memory (statevector of complex128).
        width = int(config.n_qubits)
        # Noisy expectation holds a density matrix: 4^n entries.
        self.capabilities = Capabilities.state_vector(
            width,
            {"expectation": width // 2},
            noise=True,
            classical_control=("if", "while"),
        )

    @property
    def version(self) -> str:
        """The installed qiskit-aer version."""
        return str(qiskit_aer.__version__)

    # 'sample' accepts mid-circuit measurements and resets: Aer runs them shot by shot.
    mid_circuit_methods = frozenset({"sample"})

    def noisy_width(self, method: str) -> int:
        """The method's own width: a noisy ``sample`` is Aer's choice of method."""
        return self.capabilities.max_qubits.get(method, 0)

    def run_sweep(self, request: RunRequest) -> EngineResult:
        """Run every point of a sweep in one Aer call through parameter binds.

        Each gate parameter becomes a Qiskit ``Parameter`` bound per point, so the
        circuit is built once and Aer spreads the points over the cores. With
        observables each point saves its expectation values (Aer's
        ``SaveExpectationValue``, exact); otherwise it samples ``shots``, Aer seeding
        point ``i`` with ``seed + 2113 i``, the ``point_seed`` of every engine. Should an
        Aer version seed its experiments otherwise, the points run one by one instead.

        Raises:
            EngineError: ``simulation_failed`` (retryable) when Aer reports a failure.
        """
        start = time.perf_counter()
        circuit = request.circuit
        expect = bool(request.observables)
        sets = point_parameters(request.parameters, request.sweep)
        table = slot_table(circuit, sets)
        slot_count = table.shape[1]
        bindable = bool(slot_count) and not any(op.name in _UNBINDABLE for op in circuit.ops)
        if bindable:
            slots = [Parameter(f"s{j}") for j in range(slot_count)]
            circuits = [to_qiskit(circuit, measurements=not expect, slots=slots)]
            binds = [{p: table[:, j].tolist() for j, p in enumerate(slots)}]
        else:
            # One bound circuit per point, still in one call.
            circuits = [to_qiskit(circuit, values, measurements=not expect) for values in sets]
            binds = None
        if self._foreign and any(op.name in self._foreign for op in circuit.ops):
            circuits = transpile(circuits, basis_gates=self._basis, optimization_level=0)
        elif circuit.num_qubits >= _PARALLEL_QUBITS:
            circuits = [fusion_order(qc) for qc in circuits]
        if expect:
            saves = [
                SaveExpectationValue(_pauli_op(obs, circuit.num_qubits), label=f"e{i}")
                for i, obs in enumerate(request.observables)
            ]
            for qc in circuits:
                for save in saves:
                    qc._append(CircuitInstruction(save, tuple(qc.qubits), ()))
        with self._lock:
            result = self._sim.run(
                circuits,
                parameter_binds=binds,
                shots=1 if expect else request.shots,
                seed_simulator=request.seed,
                # Points are independent experiments: one per core.
                max_parallel_experiments=0,
                max_parallel_threads=0,
            ).result()
        if not result.success:
            raise EngineError(
                f"qiskit-aer failed: {result.status}", code="simulation_failed", retryable=True
            )
        points: list[SweepPoint] = []
        if expect:
            labels = [f"e{i}" for i in range(len(request.observables))]
            for res in result.results:
                values = [float(np.real(getattr(res.data, label))) for label in labels]
                points.append(SweepPoint(expectations=values))
        else:
            seeds = [int(res.seed_simulator) for res in result.results]
            if seeds != [point_seed(request.seed, i) for i in range(len(sets))]:
                return loop_sweep(self, request)
            for res in result.results:
                points.append(SweepPoint(counts=_counts(res.data.counts, circuit.num_clbits)))
        return EngineResult.timed(request, start, sweep_results=points)

    def _prepared(self, circuit: Circuit, parameters: dict[str, float], sv: bool) -> Any:
        """The ``QuantumCircuit`` Aer runs for ``circuit``, built once per distinct circuit.

        Jobs repeat circuits (one circuit, many seeds, shot counts or users), and the
        conversion was a seventh of a small job's run; Aer does not change the circuits it
        runs, so the recent ones are kept (``_PREPARED_CACHE`` of them).
        """
        key = (circuit, tuple(sorted(parameters.items())), sv)
        with self._lock:
            qc = self._prepared_cache.get(key)
            if qc is not None:
                self._prepared_cache.move_to_end(key)
                return qc
        budget = None if sv else MAX_LOOP_ITERATIONS
        qc = to_qiskit(circuit, parameters, measurements=not sv, loop_budget=budget)
        if self._foreign and any(op.name in self._foreign for op in walk_ops(circuit.ops)):
            qc = transpile(qc, basis_gates=self._basis, optimization_level=0)
        elif circuit.num_qubits >= _PARALLEL_QUBITS:
            qc = fusion_order(qc)
        if sv:
            # After transpiling: save_statevector is Aer's own instruction, unknown to
            # the transpiler's standard basis.
            qc._append(CircuitInstruction(SaveStatevector(qc.num_qubits), tuple(qc.qubits), ()))
        with self._lock:
            self._prepared_cache[key] = qc
            if len(self._prepared_cache) > _PREPARED_CACHE:
                self._prepared_cache.popitem(last=False)
        return qc

    def _run(self, request: RunRequest) -> EngineResult:
        """Convert and run ``request`` on the engine's simulator.

        Raises:
            EngineError: ``simulation_failed`` (retryable) when Aer reports a failure.
        """
        if request.method == "expectation" or is_noisy(request.noise):
            return run_noisy(self._sim, self._lock, request, self._noisy_foreign, self._noise_names)
        start = time.perf_counter()
        circuit = request.circuit
        sv = request.method == "statevector"
        qc = self._prepared(circuit, request.parameters, sv)
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
                executor=_IN_CALLER,
            ).result()
        if not result.success:
            raise EngineError(
                f"qiskit-aer failed: {result.status}", code="simulation_failed", retryable=True
            )
        data = result.results[0].data
        if sv:
            state = np.asarray(data.statevector, dtype=np.complex128)
            return EngineResult.timed(request, start, statevector=state)
        loops = loop_paths(circuit)
        if loops:
            counts = _bounded_counts(data.counts, circuit.num_clbits, loops, shots)
        else:
            counts = _counts(data.counts, circuit.num_clbits)
        return EngineResult.timed(request, start, counts=counts)


def _bounded_counts(
    raw: Mapping[str, int], num_clbits: int, loops: list[str], shots: int
) -> dict[str, int]:
    """The IR's counts of a run with loop flags and counters (``to_qiskit(loop_budget=…)``).

    Raises:
        CircuitError: ``loop_budget_exceeded`` when any shot set a loop's flag, naming
            the first such loop and how many shots hit its budget.
    """
    mask = (1 << num_clbits) - 1
    hits = [0] * len(loops)
    counts: dict[str, int] = {}
    fmt = f"0{num_clbits}b"
    for key, n in raw.items():
        value = int(key, 16)
        flags = value >> num_clbits
        for i in range(len(loops)):
            if (flags >> i) & 1:
                hits[i] += int(n)
        bits = format(value & mask, fmt)
        counts[bits] = counts.get(bits, 0) + int(n)
    for path, hit in zip(loops, hits, strict=True):
        if hit:
            raise CircuitError(
                f"the 'while' loop at {path} still runs after {MAX_LOOP_ITERATIONS} "
                f"iterations (in {hit} of {shots} shots); the run is stopped",
                code="loop_budget_exceeded",
                where=f"$.{path}",
            )
    return counts


def _counts(raw: Mapping[str, int], num_clbits: int) -> dict[str, int]:
    """Aer's counts as the IR's: Aer keys them by hex ("0x3"); with one classical register
    the integer's binary form, padded to the clbit count, is the IR's bitstring."""
    fmt = f"0{num_clbits}b"
    return {format(int(key, 16), fmt): int(n) for key, n in raw.items()}
