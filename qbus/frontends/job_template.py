"""The job-template schema: YAML files that ``qbus run`` turns into jobs on the bus.

A template is the seed's ``on_job`` block (how every job it makes runs) plus what to
run: a circuit or an ansatz, a Hamiltonian, an optimiser, or a method's own section
(``qaoa``, ``dynamics``, ``bb84``). ``qbus ai plan`` validates the model's proposals
against the same schema (docs/templates.md is the reference).

Validation happens in two steps, both raising ``SchemaError`` whose ``where`` is the
field path (``$.optimizer.maxiter``): msgspec checks types and ranges, then
``check_template`` checks what depends on several fields (the method's required
sections, Hamiltonian widths, graph nodes).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec

from qbus.errors import (
    MissingOptionalLibraryError,
    SchemaError,
    validation_message,
    validation_path,
)
from qbus.frontends.qasm import parse_qasm
from qbus.schemas import enums, schema_text
from qbus.schemas.dynamics import CollapseOperator
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable, PauliTerm

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Count = Annotated[int, msgspec.Meta(ge=1, le=100_000)]

METHODS = (*enums.METHODS, "vqe", "qaoa", "bb84")
"""The bus's methods make one job each; ``vqe``, ``qaoa`` and ``bb84`` are loops of jobs
run by ``qbus.producers.templates``."""
HYPERVISORS = enums.HYPERVISORS
ANSATZ_KINDS = ("hardware_efficient", "custom")
ROTATIONS = ("rx", "ry", "rz")
ENTANGLERS = ("cx", "cz")
OPTIMIZERS = ("COBYLA", "Nelder-Mead", "L-BFGS-B")
PRIORITIES = enums.PRIORITIES
ENGINE_ALIASES = {"qiskit": "qiskit-aer", "aer": "qiskit-aer"}
"""Short names a template may use for an engine (the bus knows only the full name)."""

_DENSE = re.compile(r"^[IXYZ]+$")


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


def engine_name(name: str) -> str:
    """The bus's engine name for a template's ``backend`` (``qiskit`` → ``qiskit-aer``)."""
    return ENGINE_ALIASES.get(name, name)


class OnJob(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How each job the template makes runs (the JobSubmitted fields of the same names).

    Attributes:
        backend: Engine name (or alias: ``qiskit``) or ``auto``; ``qbus run --engine``
            overrides it.
        engine: Synonym of ``backend`` (the bus's word); give one of the two.
        method: What to run: one of ``METHODS``.
        hypervisor: Sandbox driver or ``auto``.
        ai_optimize: Ask the AI assistant for an equivalence-checked rewrite.
        optimize: Run the deterministic rewrite passes.
        shots: Shots per sampling job (None: 1024; ``bb84`` always uses 1).
        seed: Base seed: job ``k`` of the template gets ``seed + k`` (None: derived by
            ingest from each job id, so reruns differ).
        noise: Noise model for every job (engines that cannot simulate it reject).
        priority: ``high``, ``normal`` or ``low``.
    """

    backend: str = "auto"
    engine: str | None = None
    method: str = "sample"
    hypervisor: str = "auto"
    ai_optimize: bool = False
    optimize: bool = True
    shots: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    noise: NoiseModel | None = None
    priority: str = "normal"

    def __post_init__(self) -> None:
        _one_of("on_job.method", self.method, METHODS)
        _one_of("on_job.hypervisor", self.hypervisor, HYPERVISORS)
        _one_of("on_job.priority", self.priority, PRIORITIES)
        if (
            self.engine is not None
            and self.backend != "auto"
            and engine_name(self.engine) != engine_name(self.backend)
        ):
            raise ValueError(
                f"on_job.engine ({self.engine!r}) and on_job.backend ({self.backend!r}) "
                "disagree: give one of them"
            )

    @property
    def engine_name(self) -> str:
        """The engine the jobs ask for, aliases resolved."""
        return engine_name(self.engine or self.backend)


class Ansatz(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parametrised trial circuit.

    Attributes:
        kind: ``hardware_efficient`` (per layer: a rotation of each kind on every qubit,
            then a ladder of entangling gates; a last rotation layer closes it) or
            ``custom`` (the OpenQASM 3 program in ``qasm``, its ``input float`` names
            being the parameters).
        qubits: Width (``hardware_efficient``).
        layers: Entangling layers (``hardware_efficient``).
        rotations: Rotation gates per qubit and layer (``hardware_efficient``).
        entangler: ``cx`` or ``cz`` (``hardware_efficient``).
        qasm: Program text or a file path (``custom``).
    """

    kind: str
    qubits: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    layers: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    rotations: list[str] = msgspec.field(default_factory=lambda: ["ry"])
    entangler: str = "cx"
    qasm: str | None = None

    def __post_init__(self) -> None:
        _one_of("ansatz.kind", self.kind, ANSATZ_KINDS)
        for r in self.rotations:
            _one_of("ansatz.rotations[]", r, ROTATIONS)
        _one_of("ansatz.entangler", self.entangler, ENTANGLERS)
        if self.kind == "hardware_efficient" and self.qubits is None:
            raise ValueError("a hardware_efficient ansatz needs 'qubits'")
        if self.kind == "hardware_efficient" and not self.rotations:
            raise ValueError("a hardware_efficient ansatz needs at least one rotation")
        if self.kind == "custom" and self.qasm is None:
            raise ValueError("a custom ansatz needs 'qasm' (program text or a file path)")


class HamiltonianTerm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One Pauli term and its coefficient.

    ``pauli`` is either dense, one letter per qubit with qubit 0 leftmost (``"ZZI"``,
    ``"II"`` for the identity), or sparse as on the bus (``"Z0 Z1"``, ``""`` for the
    identity).
    """

    pauli: str
    coeff: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.coeff):
            raise ValueError(f"coefficient {self.coeff!r} is not finite")
        if len(self.pauli) > 512:
            raise ValueError("Pauli string longer than 512 characters")
        if not _DENSE.match(self.pauli):
            PauliTerm(coeff=1.0, pauli=self.pauli)  # raises with the bad factor named

    @property
    def dense(self) -> bool:
        """True for the one-letter-per-qubit form."""
        return bool(_DENSE.match(self.pauli))

    def to_term(self) -> PauliTerm:
        """The bus's sparse ``PauliTerm``."""
        if not self.dense:
            return PauliTerm(coeff=self.coeff, pauli=self.pauli)
        factors = " ".join(f"{p}{q}" for q, p in enumerate(self.pauli) if p != "I")
        return PauliTerm(coeff=self.coeff, pauli=factors)

    def max_qubit(self) -> int:
        """Highest qubit the term touches (-1 for the identity)."""
        if self.dense:
            return len(self.pauli) - 1
        return max((q for _, q in self.to_term().factors()), default=-1)


def to_observable(terms: list[HamiltonianTerm], name: str = "") -> Observable:
    """Template terms as the bus's Pauli-sum ``Observable``."""
    return Observable(terms=[t.to_term() for t in terms], name=name)


class ObservableSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named Pauli sum reported by ``dynamics``."""

    name: str = ""
    terms: list[HamiltonianTerm]


class Optimizer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The classical optimiser of ``vqe`` and ``qaoa`` (``scipy.optimize.minimize``).

    Attributes:
        method: ``COBYLA``, ``Nelder-Mead`` or ``L-BFGS-B`` (gradients by the
            parameter-shift rule, one sweep job per evaluation).
        maxiter: Most optimiser iterations.
        tol: Convergence tolerance passed to scipy (None: scipy's default).
        initial_point: Start values, one per parameter (None: drawn from ``seed``).
        seed: Seed of the random start, uniform in [-π/4, π/4] (VQE) or [0, π/4] (QAOA).
    """

    method: str = "COBYLA"
    maxiter: Count = 100
    tol: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    initial_point: list[float] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        _one_of("optimizer.method", self.method, OPTIMIZERS)


class Qaoa(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MaxCut by QAOA.

    Attributes:
        edges: The graph, as node pairs ``[i, j]`` (nodes are qubits 0..n-1).
        weights: Edge weights (default: all 1).
        layers: QAOA depth ``p``.
    """

    edges: list[tuple[int, int]]
    weights: list[float] = []
    layers: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1


class Dynamics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Time evolution of the ``hamiltonian`` (the ``dynamics`` method).

    Attributes:
        qubits: Register width when there is no ``circuit`` (start in |0…0⟩).
        times: Report times, ascending; or give ``t_final`` and ``steps``.
        t_final: Last report time (ħ = 1).
        steps: Intervals between 0 and ``t_final``.
        collapse: Lindblad operators (``CollapseOperator``: dephasing, decay, …).
        observables: What to report at each time.
    """

    qubits: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    times: list[float] | None = None
    t_final: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    steps: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    collapse: list[CollapseOperator] = []
    observables: list[ObservableSpec]

    def report_times(self) -> list[float]:
        """The times to report at."""
        if self.times is not None:
            return list(self.times)
        assert self.t_final is not None  # check_template makes sure
        return [self.t_final * k / self.steps for k in range(self.steps + 1)]


class Bb84(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """BB84 key distribution, every qubit a circuit run on the bus.

    Attributes:
        bits: Qubits Alice sends.
        eavesdropper: Eve intercepts every qubit, measures it in a random basis and
            resends what she saw.
        qubits_per_job: Qubits (independent BB84 rounds) per circuit.
        seed: Seed of Alice's, Bob's and Eve's random bits and bases.
    """

    bits: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    eavesdropper: bool = True
    qubits_per_job: Annotated[int, msgspec.Meta(ge=1, le=24)] = 16
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0


class JobTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A job template (docs/templates.md).

    Attributes:
        name: Identifier (labels every job as ``template=<name>``).
        description: One sentence for people.
        on_job: How the jobs run, and the method.
        circuit: OpenQASM 2/3 text or a file path (relative to the template's folder).
        ansatz: A parametrised trial circuit (exclusive with ``circuit``).
        parameters: Values of a circuit's named parameters.
        sweep: Parameter sets of a ``sweep`` job.
        hamiltonian: Pauli terms: the observable of ``expectation``, the energy of
            ``vqe``, the generator of ``dynamics``.
        optimizer: For ``vqe`` and ``qaoa``.
        qaoa: The graph and depth of ``qaoa``.
        dynamics: Times, collapse operators and observables of ``dynamics``.
        bb84: Settings of ``bb84``.
    """

    name: Name | None = None
    description: str = ""
    on_job: OnJob = OnJob()
    circuit: str | None = None
    ansatz: Ansatz | None = None
    parameters: dict[str, float] = {}
    sweep: list[dict[str, float]] = []
    hamiltonian: list[HamiltonianTerm] = []
    optimizer: Optimizer | None = None
    qaoa: Qaoa | None = None
    dynamics: Dynamics | None = None
    bb84: Bb84 | None = None

    @property
    def method(self) -> str:
        """The method that runs: an ``expectation`` template with an optimiser is VQE."""
        if self.on_job.method == "expectation" and self.optimizer is not None:
            return "vqe"
        return self.on_job.method

    def hamiltonian_qubits(self) -> int:
        """Qubits the Hamiltonian acts on (0 when there is none)."""
        return max((t.max_qubit() for t in self.hamiltonian), default=-1) + 1


def _fail(message: str, where: str) -> SchemaError:
    return SchemaError(f"invalid job template: {message}", where=where)


def check_template(t: JobTemplate) -> None:
    """Checks that span several fields; msgspec has done the per-field ones.

    Raises:
        SchemaError: ``where`` is the field path of the first problem.
    """
    method = t.method
    if t.circuit is not None and t.ansatz is not None:
        raise _fail("give exactly one of 'circuit' and 'ansatz'", "$.ansatz")
    widths = {len(term.pauli) for term in t.hamiltonian if term.dense}
    if len(widths) > 1:
        raise _fail(f"hamiltonian terms have different lengths {sorted(widths)}", "$.hamiltonian")
    if t.ansatz is not None and t.ansatz.qubits is not None and t.hamiltonian:
        n = t.hamiltonian_qubits()
        if (widths and widths != {t.ansatz.qubits}) or n > t.ansatz.qubits:
            raise _fail(
                f"hamiltonian acts on {max(widths or {n})} qubits, the ansatz on {t.ansatz.qubits}",
                "$.ansatz.qubits",
            )
    needs = {
        "sample": ("circuit",),
        "statevector": ("circuit",),
        "expectation": ("circuit|ansatz", "hamiltonian"),
        "sweep": ("circuit", "sweep"),
        "vqe": ("circuit|ansatz", "hamiltonian"),
        "qaoa": ("qaoa",),
        "dynamics": ("hamiltonian", "dynamics"),
        "bb84": (),
    }[method]
    for need in needs:
        if not any(getattr(t, name) for name in need.split("|")):
            wanted = " or ".join(f"'{n}'" for n in need.split("|"))
            raise _fail(f"method {method!r} needs {wanted}", f"$.{need.split('|')[0]}")
    unused = {
        "optimizer": method in ("vqe", "qaoa"),
        "qaoa": method == "qaoa",
        "dynamics": method == "dynamics",
        "bb84": method == "bb84",
        "sweep": method == "sweep",
    }
    for name, used in unused.items():
        if getattr(t, name) and not used:
            hint = " (an 'optimizer' needs an 'ansatz' to optimise)" if name == "optimizer" else ""
            raise _fail(f"'{name}' is not used by method {method!r}{hint}", f"$.{name}")
    point = t.optimizer.initial_point if t.optimizer is not None else None
    if point is not None and not all(math.isfinite(x) for x in point):
        raise _fail("initial_point has a non-finite value", "$.optimizer.initial_point")
    if t.qaoa is not None:
        q = t.qaoa
        if not q.edges:
            raise _fail("the graph has no edges", "$.qaoa.edges")
        seen = set()
        for i, (a, b) in enumerate(q.edges):
            if a < 0 or b < 0 or a == b:
                raise _fail(f"edge [{a}, {b}] needs two different nodes >= 0", f"$.qaoa.edges[{i}]")
            if frozenset((a, b)) in seen:
                raise _fail(f"edge [{a}, {b}] is given twice", f"$.qaoa.edges[{i}]")
            seen.add(frozenset((a, b)))
        if max(max(e) for e in q.edges) >= 24:
            raise _fail("at most 24 nodes (the brute-force reference)", "$.qaoa.edges")
        if q.weights and len(q.weights) != len(q.edges):
            raise _fail(f"{len(q.weights)} weights for {len(q.edges)} edges", "$.qaoa.weights")
    if t.dynamics is not None:
        d = t.dynamics
        if (d.times is None) == (d.t_final is None):
            raise _fail("give exactly one of 'times' and 't_final'", "$.dynamics.times")
        if not d.observables:
            raise _fail("give at least one observable to report", "$.dynamics.observables")
        if t.circuit is None and d.qubits is None:
            raise _fail(
                "give 'qubits' (start in |0…0⟩) or a 'circuit' preparing the start",
                "$.dynamics.qubits",
            )


def load_circuit_text(value: str, base_dir: Path | None) -> str:
    """Program text for a ``circuit``/``qasm`` value: inline text, or a file to read.

    A value with a newline, a ``;`` or starting with ``OPENQASM`` is inline text;
    anything else is a path, relative to ``base_dir`` (the template's folder).

    Raises:
        SchemaError: The file cannot be read.
    """
    text = value.strip()
    if "\n" in text or ";" in text or text.upper().startswith("OPENQASM") or text.startswith("{"):
        return value
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"cannot read circuit file {str(path)!r}: {exc.strerror}") from exc


def template_json_schema() -> dict[str, Any]:
    """JSON Schema of ``JobTemplate`` (for other tools and for prompts)."""
    return schema_text.schema(JobTemplate)


def parse_yaml(text: str) -> dict[str, Any]:
    """YAML text as a mapping.

    Raises:
        SchemaError: Not YAML, or not a mapping.
        MissingOptionalLibraryError: PyYAML is not installed.
    """
    try:
        import yaml
    except ImportError as exc:
        raise MissingOptionalLibraryError("PyYAML", "ai", "job templates") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchemaError(f"the template is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError("the template must be a YAML mapping", where="$")
    return data


def validate_data(data: dict[str, Any], base_dir: Path | None = None) -> JobTemplate:
    """Validate a template already read as a mapping; circuits are read and parsed.

    Args:
        data: The template as plain values.
        base_dir: Folder that relative circuit paths are resolved against (None: the
            working directory).

    Raises:
        SchemaError: Not a valid template; ``where`` is the field path.
        CircuitError: A ``circuit`` or custom ``ansatz.qasm`` does not parse.
    """
    try:
        # Lax mode: YAML 1.1 reads ``1e-6`` (no dot) as a string; numbers in strings pass.
        template = msgspec.convert(data, JobTemplate, strict=False)
    except msgspec.ValidationError as exc:
        raise SchemaError(
            f"invalid job template: {validation_message(exc)}", where=validation_path(exc) or "$"
        ) from exc
    check_template(template)
    if template.circuit is not None:
        text = load_circuit_text(template.circuit, base_dir)
        parse_qasm(text)
        template = msgspec.structs.replace(template, circuit=text)
    if template.ansatz is not None and template.ansatz.qasm is not None:
        text = load_circuit_text(template.ansatz.qasm, base_dir)
        circuit, _ = parse_qasm(text)
        if not circuit.parameters:
            raise SchemaError(
                "invalid job template: a custom ansatz needs named parameters "
                "('input float theta;')",
                where="$.ansatz.qasm",
            )
        template = msgspec.structs.replace(
            template, ansatz=msgspec.structs.replace(template.ansatz, qasm=text)
        )
    return template


def validate_template(text: str, base_dir: Path | None = None) -> JobTemplate:
    """Parse YAML text and validate it as a job template.

    A ``circuit`` is read (when it is a path) and parsed with the ingest parser.

    Raises:
        SchemaError: Not YAML, or not a valid template; ``where`` is the field path.
        CircuitError: The ``circuit`` does not parse (line/column).
        MissingOptionalLibraryError: PyYAML is not installed.
    """
    return validate_data(parse_yaml(text), base_dir)
