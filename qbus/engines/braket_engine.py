"""The braket engine: IR -> ``braket.circuits.Circuit`` -> Braket's ``LocalSimulator``.

The Braket SDK is imported here (and in ``convert_braket``) only; without it, importing
this module raises ``MissingOptionalLibraryError`` with the ``pip install 'qbus[braket]'``
hint, which the registry passes on.

Braket's local state-vector simulator draws its samples from an unseeded
``numpy.random.default_rng()`` and takes no seed, so **sampling is not reproducible**:
the same seed gives counts from the same distribution, not the same counts. The seed is
still reported back as given.

Per-run overhead is Braket's, not ours: ``LocalSimulator`` accepts a circuit only as an
OpenQASM 3 program, which its ANTLR parser reads back on every run (about 10 ms for a
5-qubit GHZ, most of the engine's time at small widths).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest, memory_width
from qbus.engines.kernels import little_endian
from qbus.engines.reference import counts_from_bits
from qbus.errors import EngineError, MissingOptionalLibraryError

try:
    import braket._sdk
    import braket.default_simulator
    from braket.devices import LocalSimulator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("amazon-braket-sdk", "braket", "the braket engine") from exc

from qbus.engines.convert_braket import to_braket
from qbus.engines.noise_braket import check_braket_noise, run_noisy
from qbus.schemas.noise import is_noisy


class BraketEngine(Engine):
    """Amazon Braket's ``LocalSimulator("braket_sv")`` as a qbus engine.

    ``sample`` runs the circuit with ``shots`` (Braket measures every qubit; the counts
    keep the measured qubits' bits at their clbits). ``statevector`` adds a
    ``StateVector`` result type to the circuit without measurements and reorders
    Braket's big-endian vector into the IR's order. Only terminal measurements are
    accepted. Sampling is not seedable (see the module doc).
    """

    name = "braket"

    def __init__(self) -> None:
        """Create the engine's single local simulator and read its width once."""
        self._sim = LocalSimulator("braket_sv")
        # The simulator's own limit (26 qubits in amazon-braket-default-simulator 1.x),
        # or less where the machine's memory holds less: the complex128 state, Braket's
        # scratch copy, the returned copy and its reordering.
        width = memory_width(64, cap=int(self._sim.properties.paradigm.qubitCount))
        # Noisy runs (and 'expectation', which only noisy jobs send) use the
        # density-matrix simulator: 4^n entries, so at most 10 qubits here.
        self._dm_sim = LocalSimulator("braket_dm")
        noisy_width = min(10, int(self._dm_sim.properties.paradigm.qubitCount))
        self.capabilities = Capabilities.state_vector(
            width, {"expectation": noisy_width}, noise=True
        )
        # Braket's simulator objects are not documented as thread-safe; a lock keeps
        # concurrent jobs from sharing one run's state.
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The installed Braket SDK and default-simulator versions."""
        return f"{braket._sdk.__version__}+sim{braket.default_simulator.__version__}"

    def _check(self, request: RunRequest) -> None:
        """That a noisy request's noise is one Braket's simulator runs.

        Raises:
            EngineError: From ``check_braket_noise``.
        """
        if is_noisy(request.noise):
            check_braket_noise(request)

    def _run(self, request: RunRequest) -> EngineResult:
        """Convert and run ``request`` on the local simulator.

        Raises:
            EngineError: ``simulation_failed`` when Braket fails.
        """
        if request.method == "expectation" or is_noisy(request.noise):
            return run_noisy(self._dm_sim, self._lock, request)
        start = time.perf_counter()
        circuit = request.circuit
        n = circuit.num_qubits
        bc = to_braket(circuit, request.parameters)
        sv = request.method == "statevector"
        if sv:
            bc.state_vector()
        try:
            with self._lock:
                result = self._sim.run(bc, shots=0 if sv else request.shots).result()
        except Exception as exc:  # Braket raises plain ValueError/RuntimeError
            raise EngineError(f"braket failed: {exc}", code="simulation_failed") from exc
        if sv:
            # Braket's state is big-endian (qubit 0 the MSB).
            return EngineResult.timed(
                request, start, statevector=little_endian(result.values[0], n)
            )
        qubits = [int(q) for q in result.measured_qubits]
        counts = counts_from_bits(np.asarray(result.measurements), qubits, circuit)
        return EngineResult.timed(request, start, counts=counts)
