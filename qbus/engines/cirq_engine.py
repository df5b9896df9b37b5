"""The ``cirq`` and ``qsim`` engines: IR -> ``cirq.Circuit`` -> Cirq's or qsim's simulator.

Cirq and qsimcirq are imported here (and in ``convert_cirq``) only; without them,
importing this module raises ``MissingOptionalLibraryError`` with the
``pip install 'qbus[cirq]'`` hint, which the registry passes on.

``statevector`` simulates the circuit without its measurements. ``sample`` of a circuit
whose measurements are all terminal does the same and draws every shot from the final
state with ``numpy.random.default_rng(seed)``; only mid-circuit measurements and resets
go through the simulator's own shot-by-shot ``run``. Both engines build a fresh
simulator per run (microseconds): a simulator's seed is fixed when it is built, and
the seed rides on the request.

Qubit order: Cirq's state vectors are big-endian in the ``qubit_order`` they are given
(the first qubit is the most significant bit). Asking for ``LineQubit(n-1) ..
LineQubit(0)`` makes qubit 0 the least significant bit, the IR's order, with no
permutation of the result. qsimcirq honours ``qubit_order`` the same way.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest, memory_width
from qbus.engines.reference import check_terminal_measurements, clbit_sources
from qbus.errors import CircuitError, EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit, has_control_flow, walk_ops
from qbus.schemas.noise import is_noisy

try:
    import cirq
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("cirq-core", "cirq", "the cirq engine") from exc

from qbus.engines.convert_cirq import (
    CONTROL_CONSTRUCTS,
    check_cirq_control,
    counts_from_records,
    line_qubits,
    to_cirq,
)
from qbus.engines.noise_cirq import MAX_NOISY_QUBITS, run_noisy

# Below this width a run is too small to gain from threads (qsim's own advice); above
# it qsim gets every core.
_PARALLEL_QUBITS = 14
# qsim fuses gates into blocks of at most this many qubits. Measured on the 2-core
# machine (qsimcirq called directly, five circuit families, best of 4 interleaved,
# 2026-12-08): 2 and 3 tie below 20 qubits (2 ahead at 12), 3 wins from 20 and by
# 15-30% at 22 and 24 qubits, where 4 (qsimcirq's suggestion for large circuits) lost
# to 3 on every family.
_FUSE_SMALL, _FUSE_LARGE, _FUSE_FROM = 2, 3, 20


_memory_width = memory_width


def qsim_fuse_size(n: int) -> int:
    """qsim's ``max_fused_gate_size`` for an ``n``-qubit run."""
    return _FUSE_LARGE if n >= _FUSE_FROM else _FUSE_SMALL


def _random_state(seed: int) -> np.random.RandomState:
    """The ``RandomState`` a simulator draws from for ``seed`` (0..2**63-1).

    Cirq and qsimcirq take a ``RandomState``. One seeded with an integer runs MT19937's
    seeding (about 0.3 ms, a third of a small job) and takes no seed past 2**32; one
    on a ``PCG64`` bit generator is built in microseconds from any 64-bit seed.
    """
    return np.random.RandomState(np.random.PCG64(seed))


def _terminal(circuit: Circuit) -> bool:
    """Whether every measurement is terminal and every reset acts on a fresh qubit.

    A circuit with classical control is never terminal: it runs shot by shot.
    """
    if has_control_flow(circuit):
        return False
    try:
        check_terminal_measurements(circuit)
    except CircuitError:
        return False
    return True


def sample_counts(
    circuit: Circuit, state: np.ndarray, shots: int, rng: np.random.Generator
) -> dict[str, int]:
    """Draw ``shots`` measurement outcomes of ``circuit``'s clbits from its final state.

    Args:
        circuit: The circuit (its measurements terminal).
        state: Its final state before the measurements (qubit 0 the LSB).
        shots: Number of shots.
        rng: The generator to draw with.

    Returns:
        Bitstring (clbit 0 rightmost, unwritten clbits ``0``) -> count.
    """
    probs = state.real**2 + state.imag**2
    probs /= probs.sum()  # multinomial insists on a sum of at most 1
    draws = rng.multinomial(shots, probs)
    idx = np.flatnonzero(draws)
    m = circuit.num_clbits
    # Same construction as counts_from_records: a row of '0'/'1' bytes per outcome.
    chars = np.full((idx.size, m), ord("0"), dtype=np.uint8)
    for c, q in clbit_sources(circuit).items():
        chars[:, m - 1 - c] += ((idx >> q) & 1).astype(np.uint8)
    counts: dict[str, int] = {}
    # Several basis states share a key when some qubits are not measured.
    for key, n in zip(chars.view(f"S{m}").reshape(-1), draws[idx], strict=True):
        k = key.decode()
        counts[k] = counts.get(k, 0) + int(n)
    return counts


def _widened(state: np.ndarray) -> np.ndarray:
    """qsim's ``complex64`` state as ``complex128`` of norm 1.

    ``astype`` widens (numpy's plain cast loop: 0.57 ms at 20 qubits, against 1.8 ms for
    a ``multiply`` casting on the fly), BLAS's ``zdotc`` takes the squared norm of the
    widened copy in float64 (0.17 ms; a float32 dot of the narrow state erred by 2e-4
    at 24 qubits), and one in-place multiply renormalises: 0.95 ms in all, against
    3.5 ms for a float64 ``einsum`` norm of the narrow state and a casting multiply.
    """
    out = np.ascontiguousarray(state).reshape(-1).astype(np.complex128)
    norm = math.sqrt(np.vdot(out, out).real)
    if norm > 0:
        out *= 1.0 / norm
    return out


def _state_order(n: int) -> list[Any]:
    # Most significant first: LineQubit(n-1) .. LineQubit(0), so qubit 0 is the LSB.
    return list(reversed(line_qubits(n)))


class _CirqBase(Engine):
    """Shared validation, sampling and result assembly of the Cirq-based engines.

    ``sample`` of a circuit whose measurements are all terminal (the usual case)
    simulates the circuit once without them and draws every shot from the final state
    in one ``multinomial`` call of ``numpy.random.default_rng(seed)``. That is what
    ``cirq.Simulator.run`` and qsim's ``run`` do too, but both turn each shot into
    bits in Python (Cirq about 3 microseconds a shot, qsimcirq about 1): at 1000 shots
    that was 90% of a small job. A circuit with mid-circuit measurements or resets
    goes through the simulator's own ``run``, shot by shot, seeded from the request.
    """

    # 'sample' accepts mid-circuit measurements and resets: the simulator then runs
    # the circuit shot by shot (slower, but exact).
    mid_circuit_methods = frozenset({"sample"})

    def _final_state(self, program: Any, n: int) -> np.ndarray:
        """Final state of a measurement-free ``program``: complex128, qubit 0 the LSB."""
        raise NotImplementedError

    def _sampler(self, request: RunRequest) -> Any:
        """A ``cirq.Sampler`` seeded from the request, for shot-by-shot runs."""
        raise NotImplementedError

    def _shot_program(self, program: Any, circuit: Circuit) -> Any:
        """The program the sampler runs shot by shot (default: as written)."""
        return program

    def _check(self, request: RunRequest) -> None:
        """Classical control: what ``to_cirq`` can write (``check_cirq_control``)."""
        if has_control_flow(request.circuit):
            check_cirq_control(request.circuit)

    def _run(self, request: RunRequest) -> EngineResult:
        """Convert and run ``request``.

        Raises:
            EngineError: ``simulation_failed`` when the simulator raises.
        """
        if request.method == "expectation" or is_noisy(request.noise):
            # Only the cirq engine gets here: qsim lists neither noise nor 'expectation'.
            try:
                return run_noisy(request)
            except (ValueError, RuntimeError, MemoryError) as exc:
                raise EngineError(f"{self.name} failed: {exc}", code="simulation_failed") from exc
        start = time.perf_counter()
        circuit = request.circuit
        sv = request.method == "statevector"
        state = counts = None
        try:
            if sv or _terminal(circuit):
                program = to_cirq(circuit, request.parameters, measurements=False)
                state = self._final_state(program, circuit.num_qubits)
                if not sv:
                    rng = np.random.default_rng(request.seed)
                    counts = sample_counts(circuit, state, request.shots, rng)
                    state = None
            else:
                program = self._shot_program(to_cirq(circuit, request.parameters), circuit)
                result = self._sampler(request).run(program, repetitions=request.shots)
                counts = counts_from_records(result.records, circuit.num_clbits)
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise EngineError(f"{self.name} failed: {exc}", code="simulation_failed") from exc
        return EngineResult.timed(request, start, counts=counts, statevector=state)


class CirqEngine(_CirqBase):
    """Cirq's own ``cirq.Simulator`` in ``complex128`` as a qbus engine.

    ``statevector`` simulates the circuit without its measurements and returns the
    final state; ``sample`` draws from it (see ``_CirqBase``), or runs the circuit
    shot by shot when it measures or resets mid-circuit.
    """

    name = "cirq"

    def __init__(self) -> None:
        """Size the engine from the machine's memory."""
        # complex128 state + Cirq's scratch buffer + the returned copy, and the
        # probabilities when sampling.
        width = _memory_width(56, cap=30)
        # 'expectation' here is the noisy one, on a density matrix (noise_cirq).
        self.capabilities = Capabilities.state_vector(
            width,
            {"expectation": MAX_NOISY_QUBITS},
            noise=True,
            classical_control=CONTROL_CONSTRUCTS,
        )

    @property
    def version(self) -> str:
        """The installed cirq-core version."""
        return str(cirq.__version__)

    def _final_state(self, program: Any, n: int) -> np.ndarray:
        # Nothing random happens (no measurements, resets only of fresh qubits), so
        # the simulator needs no seed. Not splitting untangled qubits into separate
        # states saves their bookkeeping and final merge on every run.
        sim = cirq.Simulator(dtype=np.complex128, split_untangled_states=False)
        result = sim.simulate(program, qubit_order=_state_order(n))
        return np.asarray(result.final_state_vector, dtype=np.complex128)

    def _sampler(self, request: RunRequest) -> Any:
        return cirq.Simulator(
            dtype=np.complex128,
            seed=_random_state(request.seed),
            split_untangled_states=False,
        )


class QsimEngine(_CirqBase):
    """Google's qsim (through qsimcirq's ``QSimSimulator``) as a qbus engine.

    qsim computes in single precision: ``statevector`` returns its ``complex64`` state
    widened to ``complex128`` and renormalised (rounding drifts the norm by about 1e-7
    per gate; the direction stays good to a fidelity of 1 - 1e-12 or so on the test
    circuits). ``sample`` draws from that state (see ``_CirqBase``), or runs qsim shot
    by shot for mid-circuit measurements and resets.

    Classical control: qsim refuses Cirq's classically controlled operations
    ("unparseable op"), so a circuit with ``if`` runs as ``cirq.defer_measurements``
    writes it: each mid-circuit measurement becomes a CNOT onto a fresh ancilla qubit
    and each condition a quantum control on those ancillas, measured at the end. The
    distribution is the same (the deferred measurement principle); the state is wider
    by one qubit per mid-circuit measurement, which ``_check`` bounds.
    """

    name = "qsim"

    def __init__(self) -> None:
        """Check that qsimcirq imports and size the engine from the machine's memory."""
        try:
            import qsimcirq
        except ImportError as exc:
            raise MissingOptionalLibraryError("qsimcirq", "cirq", "the qsim engine") from exc
        self._qsimcirq = qsimcirq
        # complex64 state, the complex64 result, its complex128 copy, probabilities.
        width = _memory_width(40, cap=32)
        self.capabilities = Capabilities.state_vector(width, classical_control=CONTROL_CONSTRUCTS)

    def _check(self, request: RunRequest) -> None:
        """Cirq's checks of classical control, and the deferred circuit's width.

        Raises:
            EngineError: As ``check_cirq_control``; ``too_many_qubits`` when the
                circuit with one ancilla per measurement is wider than the engine runs.
        """
        super()._check(request)
        circuit = request.circuit
        if not has_control_flow(circuit):
            return
        # An upper bound: cirq defers only mid-circuit measurements; to_cirq adds one
        # scratch qubit for measurements and resets inside blocks.
        ancillas = 1 + sum(len(op.qubits) for op in walk_ops(circuit.ops) if op.name == "measure")
        width = self.capabilities.max_qubits["sample"]
        if circuit.num_qubits + ancillas > width:
            raise EngineError(
                f"qsim runs classical control with an extra qubit per measurement and a "
                f"scratch qubit: {circuit.num_qubits} + {ancillas} qubits, over its {width}",
                code="too_many_qubits",
            )

    def _shot_program(self, program: Any, circuit: Circuit) -> Any:
        # qsim has no classically controlled operations: defer the measurements.
        return cirq.defer_measurements(program) if has_control_flow(circuit) else program

    @property
    def version(self) -> str:
        """The installed qsimcirq version."""
        return str(self._qsimcirq.__version__)

    def _simulator(self, n: int, seed: Any) -> Any:
        options = {
            "t": (os.cpu_count() or 1) if n >= _PARALLEL_QUBITS else 1,
            "f": qsim_fuse_size(n),
        }
        return self._qsimcirq.QSimSimulator(qsim_options=options, seed=seed)

    def _final_state(self, program: Any, n: int) -> np.ndarray:
        sim = self._simulator(n, None)
        # The raw complex64 array: ``simulate().final_state_vector`` takes Cirq's norm,
        # divides into a copy and compares two more dot products, four passes that
        # ``_widened`` repeats anyway (GHZ on 20 qubits: 4 ms of an 18 ms run).
        _, state, _ = sim.simulate_into_1d_array(program, qubit_order=_state_order(n))
        return _widened(state)

    def _sampler(self, request: RunRequest) -> Any:
        return self._simulator(request.circuit.num_qubits, _random_state(request.seed))


__all__ = ["CirqEngine", "QsimEngine", "qsim_fuse_size", "sample_counts"]
