"""The Engine protocol: what every simulator or device backend provides.

An engine describes what it can do as data (``Capabilities``, like Qiskit's ``Target``),
checks a request cheaply with ``validate`` before any compute starts (PennyLane's
"validation before execution"), and runs it with ``run``. Shots, seed and parameter
values ride on the ``RunRequest``, never on the engine, so one engine instance serves
every job of a process.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import msgspec
import numpy as np

from qbus.engines.observables import expectation_values
from qbus.engines.sweep import check_sweep, point_requests
from qbus.errors import CircuitError, EngineError
from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec
from qbus.schemas.gates import DIRECTIVES
from qbus.schemas.ir import Circuit, Param
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable
from qbus.schemas.sweep import SweepPoint

# Seeds travel as JSON integers and are handed to simulators that take a signed 64-bit
# seed; anything outside that range would be truncated differently by each engine.
_MAX_SEED = 2**63 - 1


def numeric_params(
    params: tuple[Param, ...], values: Mapping[str, float] | None = None
) -> tuple[float, ...]:
    """An op's angles as floats, evaluating expression strings against ``values``.

    Args:
        params: The op's parameters: numbers or expressions over named parameters.
        values: Values of the named parameters.

    Raises:
        CircuitError: From the expression evaluator, for an unknown name or bad syntax.
    """
    if not any(isinstance(p, str) for p in params):
        return tuple(float(p) for p in params)
    # Imported lazily: expressions are rare, and most jobs never need the evaluator.
    from qbus.frontends.expr import evaluate

    vals = dict(values or {})
    return tuple(evaluate(p, vals) if isinstance(p, str) else float(p) for p in params)


def memory_width(bytes_per_amplitude: int, cap: int) -> int:
    """Widest state that fits in half the machine's memory, at most ``cap`` qubits.

    Args:
        bytes_per_amplitude: What one amplitude costs the engine, copies included.
        cap: The engine's own hard limit.
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return min(cap, 24)
    width = int(np.log2(max(memory // 2 // bytes_per_amplitude, 1)))
    return max(1, min(cap, width))


class Capabilities(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an engine can run, as data the router filters on.

    Attributes:
        methods: Supported methods (``sample``, ``statevector``).
        max_qubits: Largest circuit width per method.
        gates: IR gate names the engine accepts (directives are always accepted).
        noise: Whether the engine can apply a noise model.
        batching: Whether the engine runs several circuits in one call.
        device: ``cpu`` or ``gpu``.
    """

    methods: tuple[str, ...]
    max_qubits: dict[str, int]
    gates: tuple[str, ...]
    noise: bool = False
    batching: bool = False
    device: str = "cpu"


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One run of one circuit.

    Attributes:
        circuit: The circuit to run (named parameters may still be unbound).
        method: ``sample`` or ``statevector``.
        shots: Number of shots for ``sample``.
        seed: Simulator seed; the same seed gives the same counts on the same engine.
        parameters: Values of the circuit's named parameters.
        noise: Noise model (None: noiseless); an engine without noise support rejects
            a non-trivial one in ``validate``.
        sweep: For ``sweep``: parameter sets, each updating ``parameters`` for one point.
        observables: Observables for ``expectation`` and for ``sweep`` points.
        dynamics: For ``dynamics``: what to evolve and report.
    """

    circuit: Circuit
    method: str = "sample"
    shots: int = 1024
    seed: int = 0
    parameters: dict[str, float] = {}
    noise: NoiseModel | None = None
    sweep: list[dict[str, float]] = []
    observables: list[Observable] = []
    dynamics: DynamicsSpec | None = None


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine returns.

    A dataclass rather than a Struct because it carries a numpy array, which is never
    put on the wire as is (the executor turns it into the event's float list).

    Attributes:
        counts: Bitstring -> count for ``sample`` (clbit 0 rightmost, padded to the
            circuit's clbit count).
        statevector: Final state (``complex128``, qubit 0 the LSB) for ``statevector``.
        seed: The seed the engine used.
        run_seconds: Wall time of the engine call itself.
        peak_rss_mb: Peak resident memory of the sandboxed process (None when inline).
        cpu_seconds: CPU seconds of the run, every thread (None when inline).
        wall_seconds: Wall time as the sandbox saw it, fork and transfer included.
        sweep_results: For ``sweep``: one result per parameter set.
        dynamics: For ``dynamics``: expectation values over time.
        expectations: For a noisy ``expectation`` run: one value per observable of the
            request, computed by the engine from its density matrix.
    """

    counts: dict[str, int] | None
    statevector: np.ndarray | None
    seed: int
    run_seconds: float
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    sweep_results: list[SweepPoint] | None = None
    dynamics: DynamicsResult | None = None
    expectations: list[float] | None = None


class Engine(abc.ABC):
    """Base of every engine.

    Subclasses set ``name`` and ``capabilities`` (a class attribute, or an instance
    attribute set in ``__init__`` when it depends on the machine), implement ``version``
    and ``run``, and call ``self.validate(request)`` at the top of ``run``.

    Attributes:
        name: Registry name, also the subject token in ``qbus.exec.<engine>.<job>``.
        capabilities: What the engine can run.
        fork_safe: False for an engine whose runtime starts threads on first use (JAX):
            sandbox workers then create it in each job's forked child, never before.
    """

    name: ClassVar[str]
    capabilities: Capabilities
    fork_safe: ClassVar[bool] = True

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Version of the engine's implementation (its library's version)."""

    @cached_property
    def _gate_set(self) -> frozenset[str]:
        return frozenset(self.capabilities.gates)

    def validate(self, request: RunRequest) -> None:
        """Check that the engine can run ``request``, without computing anything.

        Cost is one pass over the circuit's ops.

        Raises:
            EngineError: ``unsupported_method``, ``too_many_qubits``, ``unsupported_gate``,
                ``no_measurements`` (``sample`` of a circuit that measures nothing),
                ``invalid_shots`` or ``invalid_seed``.
            CircuitError: ``unbound_parameter`` when a named parameter has no value;
                ``invalid_sweep`` for a ``sweep`` whose points do not fit the circuit.
        """
        caps = self.capabilities
        method = request.method
        if not caps.noise and request.noise is not None and not request.noise.is_trivial():
            # Before the method check: a noisy expectation job asks for method
            # 'expectation', which only noise-capable engines list.
            raise reject_noise(self.name)
        if method not in caps.methods:
            raise EngineError(
                f"engine '{self.name}' does not support method '{method}' "
                f"(it supports {', '.join(caps.methods)})",
                code="unsupported_method",
            )
        circuit = request.circuit
        limit = caps.max_qubits.get(method, 0)
        if circuit.num_qubits > limit:
            raise EngineError(
                f"engine '{self.name}' runs at most {limit} qubits with method '{method}', "
                f"the circuit has {circuit.num_qubits}",
                code="too_many_qubits",
            )
        if not 0 <= request.seed <= _MAX_SEED:
            raise EngineError(
                f"seed must be in 0..2**63-1, got {request.seed}", code="invalid_seed"
            )
        gates = self._gate_set
        measures = False
        for i, op in enumerate(circuit.ops):
            name = op.name
            if name in DIRECTIVES:
                measures = measures or name == "measure"
            elif name not in gates:
                raise EngineError(
                    f"engine '{self.name}' does not support gate '{name}' (at $.ops[{i}])",
                    code="unsupported_gate",
                )
        if method == "sample":
            if request.shots < 1:
                raise EngineError(
                    f"method 'sample' needs at least 1 shot, got {request.shots}",
                    code="invalid_shots",
                )
            if not measures:
                raise EngineError(
                    "method 'sample' needs a circuit that measures something; add "
                    "measurements or use method 'statevector'",
                    code="no_measurements",
                )
        if method == "sweep":
            self._validate_sweep(request, measures)
        elif circuit.parameters:
            missing = sorted(set(circuit.parameters) - set(request.parameters))
            if missing:
                raise CircuitError(
                    f"parameter(s) {missing} have no value; pass them in the job's 'parameters'",
                    code="unbound_parameter",
                )

    def _validate_sweep(self, request: RunRequest, measures: bool) -> None:
        """The ``sweep`` checks: the points themselves, then shots and measurements when
        the points are sampled (no observables)."""
        # Imported here: the sweep module imports this one.
        check_sweep(request.circuit, request.parameters, request.sweep)
        if request.observables:
            return
        if request.shots < 1:
            raise EngineError(
                f"a sampled sweep needs at least 1 shot per point, got {request.shots}",
                code="invalid_shots",
            )
        if not measures:
            raise EngineError(
                "a 'sweep' without observables samples every point and needs a circuit "
                "that measures something; add measurements or give observables",
                code="no_measurements",
            )

    def run_sweep(self, request: RunRequest) -> EngineResult:
        """Run a ``sweep`` request: one result per point, in ``EngineResult.sweep_results``.

        The default runs the points one by one through ``run`` (see
        ``qbus.engines.sweep``); engines that batch override it. ``run`` hands
        ``method="sweep"`` requests here after validating them.

        Raises:
            EngineError, CircuitError: As ``run``, for the first point that fails.
        """
        return loop_sweep(self, request)

    @abc.abstractmethod
    def run(self, request: RunRequest) -> EngineResult:
        """Run ``request`` and return its result.

        Raises:
            EngineError: The request is outside the engine's capabilities (from
                ``validate``) or the engine failed.
            CircuitError: The circuit cannot be run as given (unbound parameters …).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.version}>"


NOISE_ENGINES = ("qiskit-aer", "cirq", "braket", "pennylane", "qutip")
"""Engines shipped with qbus that simulate a noise model."""


def reject_noise(engine: str) -> EngineError:
    """The ``noise_unsupported`` error of an engine that cannot simulate noise."""
    return EngineError(
        f"engine '{engine}' cannot simulate a noise model; engines that can: "
        f"{', '.join(NOISE_ENGINES)} (or leave engine 'auto')",
        code="noise_unsupported",
    )


def loop_sweep(engine: Engine, request: RunRequest) -> EngineResult:
    """Run a sweep point by point through ``engine.run``: the default ``run_sweep``."""
    start = time.perf_counter()
    points: list[SweepPoint] = []
    for point in point_requests(request):
        result = engine.run(point)
        if request.observables:
            assert result.statevector is not None  # a statevector run returns one
            values = expectation_values(result.statevector, request.observables)
            points.append(SweepPoint(expectations=values))
        else:
            points.append(SweepPoint(counts=result.counts))
    return EngineResult(
        counts=None,
        statevector=None,
        seed=request.seed,
        run_seconds=time.perf_counter() - start,
        sweep_results=points,
    )
