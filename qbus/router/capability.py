"""What an engine can run: the capability filter, and routing by noise or ``dynamics``.

``engine="auto"`` picks an engine that can run the job; a named engine that cannot is
refused here, with the same code its executor would fail with, so the job ends at once
instead of after a trip to the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from qbus.engines.base import NOISE_ENGINES, Capabilities, Engine, RunRequest
from qbus.engines.registry import get_engine
from qbus.errors import QbusError, Reject
from qbus.schemas.events import JobOptions
from qbus.schemas.ir import Circuit, control_constructs
from qbus.schemas.noise import is_noisy

NOISELESS_ENGINES = frozenset({"reference", "jax", "qsim", "quimb-tn"})
"""Engines shipped with qbus that cannot simulate noise."""

DYNAMICS_ENGINES = ("qutip", "jax")
"""Engines shipped with qbus that run the ``dynamics`` method, preferred first."""

CONTROL_ENGINES = ("qiskit-aer", "reference")
"""Engines shipped with qbus that run classical control (``if``/``while``), preferred first."""

BUILTIN_CONTROL: dict[str, tuple[str, ...]] = {
    "qiskit-aer": ("if", "while"),
    "reference": ("if", "while"),
    "cirq": ("if",),
    "qsim": ("if",),
    "braket": (),
    "pennylane": (),
    "qutip": (),
    "jax": (),
    "quest": (),
    "quimb-tn": (),
}
"""The control-flow constructs each engine shipped with qbus claims
(``Capabilities.classical_control``, at the locked framework versions; a test keeps the
two equal). Routing reads this instead of loading every installed engine: importing the
frameworks takes the route stage tens of seconds."""


def _simulates_noise(engine: str) -> bool:
    if engine in NOISE_ENGINES:
        return True
    if engine in NOISELESS_ENGINES:
        return False
    # A third-party engine: its capabilities say (loading it costs once per process).
    try:
        return get_engine(engine).capabilities.noise
    except Exception:  # an engine that does not load cannot run the job either
        return False


def route_noisy(requested: str, engine: str, reason: str, installed: list[str]) -> tuple[str, str]:
    """The engine for a job with a non-trivial noise model.

    Args:
        requested: The job's ``engine`` field (``auto`` or a name).
        engine: What the default policy chose.
        reason: Its reason.
        installed: Installed engine names.

    Raises:
        Reject: ``noise_unsupported`` when the named engine cannot simulate noise, or
            no installed engine can.
    """
    if _simulates_noise(engine):
        return engine, reason
    if requested == "auto":
        for candidate in NOISE_ENGINES:
            if candidate in installed:
                return candidate, f"auto: noisy job, {engine!r} cannot simulate noise"
        raise Reject(
            f"the job has a noise model, but no installed engine simulates noise; install "
            f"one of {', '.join(NOISE_ENGINES)} (pip install 'qbus[qiskit]')",
            code="noise_unsupported",
            where="$.noise",
        )
    raise Reject(
        f"engine {engine!r} cannot simulate a noise model; engines that can: "
        f"{', '.join(NOISE_ENGINES)} (or leave engine 'auto')",
        code="noise_unsupported",
        where="$.engine",
    )


def route_dynamics(
    requested: str, engine: str, reason: str, installed: list[str]
) -> tuple[str, str]:
    """The engine for a ``dynamics`` job: for ``auto`` the first installed dynamics engine.

    A named engine is kept as is: its executor refuses the method with
    ``unsupported_method`` if it has no dynamics (third-party engines may).
    """
    if requested != "auto" or engine in DYNAMICS_ENGINES:
        return engine, reason
    for candidate in DYNAMICS_ENGINES:
        if candidate in installed:
            return candidate, "auto: dynamics job"
    raise Reject(
        "no installed engine runs method 'dynamics'; install qutip (pip install 'qbus[qutip]')",
        code="unsupported_method",
        where="$.method",
    )


def runs_control(engine: str, constructs: list[str], load: Callable[[str], Engine]) -> bool:
    """Whether ``engine`` claims all of ``constructs`` (``Capabilities.classical_control``)."""
    claimed = BUILTIN_CONTROL.get(engine)
    if claimed is None:
        # A third-party engine: its capabilities say (loading it costs once per process).
        try:
            claimed = load(engine).capabilities.classical_control
        except Exception:  # an engine that does not load cannot run the job either
            return False
    return set(constructs) <= set(claimed)


def control_engines(
    constructs: list[str], installed: list[str], load: Callable[[str], Engine]
) -> list[str]:
    """Installed engines that run ``constructs``, qbus's own preference first."""
    ordered = [e for e in CONTROL_ENGINES if e in installed]
    ordered += sorted(e for e in installed if e not in CONTROL_ENGINES)
    return [e for e in ordered if runs_control(e, constructs, load)]


def control_rejection(
    constructs: list[str], capable: list[str], where: str, engine: str | None = None
) -> Reject:
    """The ``classical_control_unsupported`` rejection: the constructs, and who runs them.

    Args:
        constructs: The circuit's control-flow constructs.
        capable: Engines that run them (installed; the caller says whether deployed).
        where: The rejection's field path.
        engine: The named engine that cannot, if the job named one.
    """
    named = ", ".join(f"'{c}'" for c in constructs)
    head = (
        f"engine {engine!r} cannot run classical control ({named})"
        if engine is not None
        else f"no deployed engine runs classical control ({named})"
    )
    tail = (
        f"engines that run it: {', '.join(capable)}"
        if capable
        else "no installed engine runs it; install one (pip install 'qbus[qiskit]')"
    )
    return Reject(f"{head}; {tail}", code="classical_control_unsupported", where=where)


def route_control(
    requested: str,
    engine: str,
    reason: str,
    circuit: Circuit,
    installed: list[str],
    load: Callable[[str], Engine] | None = None,
) -> tuple[str, str]:
    """The engine for a circuit with classical control (``if``/``while``).

    A circuit without control flow keeps ``engine``. Otherwise ``auto`` moves to the
    first installed engine that runs its constructs; a named engine that cannot is
    refused here rather than failing at its executor.

    Raises:
        Reject: ``classical_control_unsupported``, naming the constructs and the
            engines that run them.
    """
    constructs = control_constructs(circuit)
    load = load or get_engine
    if not constructs or runs_control(engine, constructs, load):
        return engine, reason
    capable = control_engines(constructs, installed, load)
    if requested == "auto" and capable:
        why = f"auto: classical control ({', '.join(constructs)}), {engine!r} cannot run it"
        return capable[0], why
    if requested == "auto":
        raise control_rejection(constructs, capable, "$")
    raise control_rejection(constructs, capable, "$.engine", engine)


# -- the capability filter ------------------------------------------------------------

_BYTES_PER_AMPLITUDE = 16  # complex128
_COPIES = 2  # a simulator holds the state and at least one work copy


def run_request(
    circuit: Circuit,
    options: JobOptions,
    capabilities: Capabilities | None = None,
    memory_mb: int | None = None,
) -> RunRequest:
    """The RunRequest an executor builds for these options (qbus/consumers/execute.py).

    Expectation jobs run as state vectors of the circuit without measurements, unless
    noisy or on an engine that holds no state (``capabilities.holds_state`` False): then
    the engine's own ``expectation`` method; dynamics ignores measurements.
    """
    expectation = options.method == "expectation"
    own = capabilities is not None and not capabilities.holds_state
    density = expectation and (is_noisy(options.noise) or own)
    if expectation or options.method == "dynamics":
        ops = tuple(op for op in circuit.ops if op.name not in ("measure", "barrier"))
        circuit = msgspec.structs.replace(circuit, ops=ops)
    return RunRequest(
        circuit=circuit,
        method="statevector" if expectation and not density else options.method,
        shots=options.shots,
        seed=options.seed if options.seed is not None else 0,
        parameters=options.parameters,
        noise=options.noise,
        sweep=options.sweep,
        observables=options.observables,
        dynamics=options.dynamics,
        memory_mb=memory_mb,
    )


def state_bytes(qubits: int, noisy: bool) -> int:
    """Memory a simulation of ``qubits`` needs: a state vector, or a density matrix."""
    amplitudes = 4**qubits if noisy else 2**qubits
    return _BYTES_PER_AMPLITUDE * amplitudes * _COPIES


@dataclass(frozen=True, slots=True)
class Fit:
    """The capability filter's answer.

    Attributes:
        capable: Engines that can run the job, in the order they were given.
        excluded: Engine -> why it cannot.
    """

    capable: list[str]
    excluded: dict[str, str]

    def explain(self) -> str:
        """Every excluded engine with its reason, for a rejection message."""
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.excluded.items()))


def capability_filter(
    engines: list[str],
    circuit: Circuit,
    options: JobOptions,
    memory_cap_mb: int,
    load: Callable[[str], Engine] | None = None,
) -> Fit:
    """Which of ``engines`` can run the job, and why the others cannot.

    Each engine's own ``validate`` decides method, qubits per method, gate set, noise,
    shots and parameters (one pass over the ops, no compute); on top, the state must fit
    the job's memory limit (``memory_mb``, else the operator's cap). An engine that holds
    no dense state (a tensor network) is judged by its own ``validate``, which bounds its
    contraction cost by that memory, and is capable only when no state-vector engine is.

    Args:
        engines: Candidate engine names.
        circuit: The circuit as routed.
        options: The job's options.
        memory_cap_mb: The hypervisor's memory cap in MiB.
        load: Engine name -> instance (the registry's ``get_engine`` by default).
    """
    load = load or get_engine
    limit_mb = min(options.memory_mb or memory_cap_mb, memory_cap_mb)
    request = run_request(circuit, options, memory_mb=limit_mb)
    need = state_bytes(circuit.num_qubits, is_noisy(options.noise))
    capable: list[str] = []
    stateless: list[str] = []
    excluded: dict[str, str] = {}
    for name in engines:
        try:
            engine = load(name)
        except Exception as exc:  # an engine that does not load here cannot be judged
            excluded[name] = f"does not load in the router ({type(exc).__name__}: {exc})"
            continue
        holds_state = engine.capabilities.holds_state
        try:
            # A tensor-network engine's validate predicts its contraction cost within
            # the job's memory, and refuses with that cost (contraction_too_costly).
            engine.validate(
                request
                if holds_state
                else run_request(circuit, options, engine.capabilities, limit_mb)
            )
        except QbusError as exc:
            excluded[name] = f"{exc.code}: {exc}"
            continue
        if not holds_state:
            stateless.append(name)
            continue
        if options.method != "dynamics" and need > limit_mb * 2**20:
            kind = "density matrix" if is_noisy(options.noise) else "state vector"
            excluded[name] = (
                f"memory: a {circuit.num_qubits}-qubit {kind} needs about "
                f"{need / 2**20:,.0f} MiB, over the {limit_mb:,} MiB limit"
            )
            continue
        capable.append(name)
    if capable:
        # The dense state fits: a state-vector engine runs the job exactly and faster;
        # the tensor-network path is for what does not fit (docs/routing.md).
        for name in stateless:
            excluded[name] = "the state vector fits: a state-vector engine runs the job"
    else:
        capable = stateless
    return Fit(capable=capable, excluded=excluded)
