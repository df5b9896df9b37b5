"""The Engine protocol: what every simulator or device backend provides.

An engine describes what it can do as data (``Capabilities``, like Qiskit's ``Target``),
checks a request cheaply with ``validate`` before any compute starts (PennyLane's
"validation before execution"), and runs it with ``run``: final in the base class, it
validates once and calls the engine's ``_run`` (Qiskit's ``BackendV2.run``). Shots,
seed and parameter values ride on the ``RunRequest``, never on the engine, so one engine
instance serves every job of a process.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, final

import msgspec
import numpy as np

from qbus.engines.checks import check_bound, check_noisy_request, check_terminal_measurements
from qbus.engines.observables import expectation_values
from qbus.engines.params import numeric_params as numeric_params  # re-exported
from qbus.engines.sweep import check_sweep, point_requests
from qbus.errors import CircuitError, EngineError, QbusError
from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec
from qbus.schemas.gates import DIRECTIVES, GATES
from qbus.schemas.ir import (
    CONTROL_FLOW,
    Circuit,
    Op,
    control_constructs,
    has_control_flow,
    unbounded_loop,
)
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable
from qbus.schemas.sweep import SweepPoint

# Seeds travel as JSON integers and are handed to simulators that take a signed 64-bit
# seed; anything outside that range would be truncated differently by each engine.
_MAX_SEED = 2**63 - 1


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
        gates: IR gate names the engine accepts (directives are always accepted);
            every gate of the IR unless given.
        noise: Whether the engine can apply a noise model.
        batching: Whether the engine runs several circuits in one call.
        device: ``cpu`` or ``gpu``.
        classical_control: Control-flow constructs of the IR the engine runs
            (``if``, ``while``; ``qbus.schemas.ir.CONTROL_FLOW``), with method ``sample``.
        holds_state: Whether a run holds the dense state (16·2^n bytes): the router
            excludes such an engine when that state cannot fit the job's memory. False
            for a tensor-network engine, which bounds its own memory in ``_check``.
    """

    methods: tuple[str, ...]
    max_qubits: dict[str, int]
    gates: tuple[str, ...] = tuple(GATES)
    noise: bool = False
    batching: bool = False
    device: str = "cpu"
    classical_control: tuple[str, ...] = ()
    holds_state: bool = True

    @classmethod
    def state_vector(
        cls, width: int, others: Mapping[str, int] | None = None, **fields: Any
    ) -> Capabilities:
        """A state-vector engine's: ``sample``, ``statevector`` and ``sweep`` up to ``width``.

        Args:
            width: Widest circuit of the three methods.
            others: Further methods, each with its own widest circuit, listed after them.
            **fields: The other fields (``noise``, ``batching``, ``device``, ``gates``).
        """
        max_qubits = {"sample": width, "statevector": width, "sweep": width, **(others or {})}
        return cls(methods=tuple(max_qubits), max_qubits=max_qubits, **fields)


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
        memory_mb: Memory the run may use, MiB (the job's limit clamped to the
            hypervisor's cap), for engines that size their work to it (tensor-network
            slicing); None: the engine's own default.
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
    memory_mb: int | None = None


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

    @classmethod
    def timed(
        cls,
        request: RunRequest,
        start: float,
        *,
        counts: dict[str, int] | None = None,
        statevector: np.ndarray | None = None,
        sweep_results: list[SweepPoint] | None = None,
        expectations: list[float] | None = None,
    ) -> EngineResult:
        """The result of a run of ``request`` that began at ``perf_counter()`` time ``start``.

        Args:
            request: The request run (its seed is reported back).
            start: ``time.perf_counter()`` when the run began.
            counts: For ``sample``.
            statevector: For ``statevector``.
            sweep_results: For ``sweep``.
            expectations: For a noisy ``expectation``.
        """
        return cls(
            counts=counts,
            statevector=statevector,
            seed=request.seed,
            run_seconds=time.perf_counter() - start,
            sweep_results=sweep_results,
            expectations=expectations,
        )


class Engine(abc.ABC):
    """Base of every engine.

    Subclasses set ``name`` and ``capabilities`` (a class attribute, or an instance
    attribute set in ``__init__`` when it depends on the machine), implement ``version``
    and ``_run``, and declare what differs from the shared checks through
    ``mid_circuit_methods``, ``noisy_width`` and ``_check``. ``run`` is final: it
    validates the request once, hands a ``sweep`` to ``run_sweep`` and everything else
    to ``_run`` (like Qiskit's ``BackendV2.run`` and PennyLane's ``Device.execute``
    after its preprocessing).

    Attributes:
        name: Registry name, also the subject token in ``qbus.exec.<engine>.<job>``.
        capabilities: What the engine can run.
        fork_safe: False for an engine whose runtime starts threads on first use (JAX):
            sandbox workers then create it in each job's forked child, never before.
        mid_circuit_methods: Methods the engine runs with mid-circuit measurements and
            resets (shot by shot) when the run is noiseless; every other run needs
            terminal measurements (``mid_circuit_measurement``).
    """

    name: ClassVar[str]
    capabilities: Capabilities
    fork_safe: ClassVar[bool] = True
    mid_circuit_methods: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # typing.final is only seen by type checkers; an engine that replaced ``run``
        # (or ``validate``) could skip or repeat validation at run time, so it is
        # refused when it is defined.
        if "run" in cls.__dict__:
            raise TypeError(
                f"engine class {cls.__qualname__} overrides Engine.run, which is final: "
                "implement _run(request) instead (run validates the request, then calls it)"
            )
        if "validate" in cls.__dict__:
            raise TypeError(
                f"engine class {cls.__qualname__} overrides Engine.validate, which is final: "
                "declare capabilities, and put extra checks in _check(request)"
            )

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Version of the engine's implementation (its library's version)."""

    @cached_property
    def _gate_set(self) -> frozenset[str]:
        return frozenset(self.capabilities.gates)

    @final
    def validate(self, request: RunRequest) -> None:
        """Check that the engine can run ``request``, without computing anything.

        The shared checks, driven by ``capabilities``, ``mid_circuit_methods`` and
        ``noisy_width``, then the engine's own ``_check``. Cost is one or two passes
        over the circuit's ops.

        Raises:
            EngineError: ``unsupported_method``, ``too_many_qubits``, ``unsupported_gate``,
                ``no_measurements`` (``sample`` of a circuit that measures nothing),
                ``invalid_shots``, ``invalid_seed``, ``noise_unsupported``,
                ``invalid_noise``, ``mid_circuit_measurement``, or the engine's own.
            CircuitError: ``unbound_parameter`` when a named parameter has no value;
                ``invalid_sweep`` for a ``sweep`` whose points do not fit the circuit.
        """
        caps = self.capabilities
        method = request.method
        noisy = request.noise is not None and not request.noise.is_trivial()
        if noisy and not caps.noise:
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
        measures = self._check_gates(circuit.ops, "$.ops")
        if has_control_flow(circuit):
            self._check_control(circuit, method, noisy)
        if method == "sample":
            _check_sampled(method, request.shots, measures)
        if method == "sweep":
            check_sweep(circuit, request.parameters, request.sweep)
            if not request.observables:
                _check_sampled(method, request.shots, measures)
        else:
            check_bound(circuit, request.parameters)
        if noisy or method not in self.mid_circuit_methods:
            try:
                check_terminal_measurements(circuit)
            except CircuitError as exc:
                raise EngineError(
                    f"engine '{self.name}' runs only terminal measurements: {exc}",
                    code="mid_circuit_measurement",
                ) from exc
        if noisy and method != "dynamics":
            check_noisy_request(self.name, request, self.noisy_width(method))
        self._check(request)

    def _check_gates(self, ops: tuple[Op, ...], where: str) -> bool:
        """Check every op is a directive or a gate of the engine; whether any measures.

        Ops nested in control flow are checked too (a measurement in a block counts).

        Raises:
            EngineError: ``unsupported_gate``, naming the first op outside the gate set.
        """
        gates = self._gate_set
        measures = False
        for i, op in enumerate(ops):
            name = op.name
            if name in DIRECTIVES:
                measures = measures or name == "measure"
            elif name in CONTROL_FLOW:
                inner = self._check_gates(op.body, f"{where}[{i}].body")
                inner = self._check_gates(op.orelse, f"{where}[{i}].orelse") or inner
                measures = measures or inner
            elif name not in gates:
                raise EngineError(
                    f"engine '{self.name}' does not support gate '{name}' (at {where}[{i}])",
                    code="unsupported_gate",
                )
        return measures

    def _check_control(self, circuit: Circuit, method: str, noisy: bool) -> None:
        """Check the engine runs the circuit's control flow, and that the run can hold it.

        Raises:
            EngineError: ``classical_control_unsupported`` naming the construct the
                engine lacks; ``unsupported_method`` for a method other than ``sample``
                (a dynamic circuit's output is a distribution, not one state).
        """
        constructs = control_constructs(circuit)
        missing = [c for c in constructs if c not in self.capabilities.classical_control]
        if missing:
            runs = ", ".join(f"'{c}'" for c in self.capabilities.classical_control)
            raise EngineError(
                f"engine '{self.name}' cannot run classical control "
                f"({', '.join(repr(c) for c in missing)} in the circuit); "
                + (f"it runs only {runs}" if runs else "it runs no classical control"),
                code="classical_control_unsupported",
            )
        loop = unbounded_loop(circuit)
        if loop is not None:
            raise EngineError(
                f"the 'while' loop at $.{loop} never measures into a bit its condition "
                "reads: once entered it would never end",
                code="unbounded_loop",
            )
        if method != "sample" or noisy:
            what = "a noise model" if noisy else f"method '{method}'"
            raise EngineError(
                f"a circuit with classical control runs with method 'sample' and no "
                f"noise model, not {what}",
                code="unsupported_method",
            )

    def noisy_width(self, method: str) -> int:
        """Widest circuit the engine simulates with noise under ``method``.

        The default is the width of ``expectation`` (a density matrix either way);
        an engine whose noisy ``sample`` goes further overrides it.
        """
        return self.capabilities.max_qubits.get("expectation", 0)

    def _check(self, request: RunRequest) -> None:
        """The engine's own checks, after the shared ones (default: none).

        Raises:
            EngineError, CircuitError: What the engine refuses beyond ``validate``.
        """
        return None  # most engines need nothing beyond the shared checks

    @final
    def run(self, request: RunRequest) -> EngineResult:
        """Validate ``request`` once, then run it.

        A ``sweep`` goes to ``run_sweep``, every other method to ``_run``.

        Raises:
            EngineError: The request is outside the engine's capabilities (from
                ``validate``) or the engine failed.
            CircuitError: The circuit cannot be run as given (unbound parameters …).
        """
        self.validate(request)
        try:
            if request.method == "sweep":
                return self.run_sweep(request)
            return self._run(request)
        except (QbusError, KeyboardInterrupt, SystemExit):
            raise
        except MemoryError as exc:
            raise EngineError(
                f"engine '{self.name}' ran out of memory: {exc or 'MemoryError'}",
                code="memory_limit",
            ) from exc
        except BaseException as exc:
            # Anything else an engine's library raises is a failure of this run, never
            # of the executor: a Rust panic through PyO3 (QuEST's PanicException) is a
            # BaseException and used to kill the executor process, so the job was
            # redelivered until it was dead-lettered.
            raise EngineError(
                f"engine '{self.name}' crashed: {type(exc).__name__}: {exc}",
                code="engine_crashed",
            ) from exc

    @abc.abstractmethod
    def _run(self, request: RunRequest) -> EngineResult:
        """Run a validated, non-``sweep`` ``request`` and return its result.

        Raises:
            EngineError: The engine failed (``simulation_failed`` …).
        """

    def run_sweep(self, request: RunRequest) -> EngineResult:
        """Run a validated ``sweep`` request: one result per point, in ``sweep_results``.

        The default runs the points one by one through ``_run`` (see
        ``qbus.engines.sweep``); engines that batch override it.

        Raises:
            EngineError, CircuitError: As ``_run``, for the first point that fails.
        """
        return loop_sweep(self, request)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.version}>"


def _check_sampled(method: str, shots: int, measures: bool) -> None:
    """The checks of a sampled run: at least one shot, and something measured.

    Raises:
        EngineError: ``invalid_shots``, ``no_measurements``.
    """
    sweep = method == "sweep"
    if shots < 1:
        what = (
            "a sampled sweep needs at least 1 shot per point"
            if sweep
            else ("method 'sample' needs at least 1 shot")
        )
        raise EngineError(f"{what}, got {shots}", code="invalid_shots")
    if not measures:
        raise EngineError(
            "a 'sweep' without observables samples every point and needs a circuit "
            "that measures something; add measurements or give observables"
            if sweep
            else "method 'sample' needs a circuit that measures something; add "
            "measurements or use method 'statevector'",
            code="no_measurements",
        )


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
    """Run a validated sweep point by point through ``engine._run``: the default ``run_sweep``.

    The points are not validated again: the sweep's validation covered each of them.
    """
    start = time.perf_counter()
    points: list[SweepPoint] = []
    for point in point_requests(request):
        result = engine._run(point)
        if request.observables:
            assert result.statevector is not None  # a statevector run returns one
            values = expectation_values(result.statevector, request.observables)
            points.append(SweepPoint(expectations=values))
        else:
            points.append(SweepPoint(counts=result.counts))
    return EngineResult.timed(request, start, sweep_results=points)
