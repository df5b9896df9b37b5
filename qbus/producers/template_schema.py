"""A minimal job-template schema: what ``qbus ai plan`` validates the model's YAML against.

This is the shape only. Running templates (expanding an ansatz, looping an optimizer over
``expectation`` jobs) belongs to the job-templates issue and is not built yet; until then
a validated template is a checked proposal a person turns into jobs.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from qbus.errors import MissingOptionalLibraryError, SchemaError

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PauliString = Annotated[str, msgspec.Meta(pattern=r"^[IXYZ]+$", max_length=64)]

METHODS = ("sample", "statevector", "expectation", "sweep")
HYPERVISORS = ("auto", "inline", "process", "bwrap")
ANSATZ_KINDS = ("hardware_efficient", "uccsd", "custom")
OPTIMIZERS = ("COBYLA", "SPSA", "L-BFGS-B", "Nelder-Mead")


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


class OnJob(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How each job the template makes runs (the JobSubmitted fields of the same names).

    Attributes:
        backend: Engine name or ``auto``.
        method: ``sample``, ``statevector``, ``expectation`` or ``sweep``.
        hypervisor: Sandbox driver or ``auto``.
        ai_optimize: Ask the AI assistant for an equivalence-checked rewrite.
        shots: Shots per job for ``sample``.
    """

    backend: str = "auto"
    method: str = "sample"
    hypervisor: str = "auto"
    ai_optimize: bool = False
    shots: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None

    def __post_init__(self) -> None:
        _one_of("on_job.method", self.method, METHODS)
        _one_of("on_job.hypervisor", self.hypervisor, HYPERVISORS)


class Ansatz(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parametrised trial circuit described by kind and size."""

    kind: str
    qubits: Annotated[int, msgspec.Meta(ge=1, le=64)]
    layers: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1

    def __post_init__(self) -> None:
        _one_of("ansatz.kind", self.kind, ANSATZ_KINDS)


class HamiltonianTerm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One Pauli term: a string over I/X/Y/Z (qubit 0 leftmost) and its coefficient."""

    pauli: PauliString
    coeff: float


class Optimizer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The classical optimizer of a variational template."""

    method: str
    maxiter: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100

    def __post_init__(self) -> None:
        _one_of("optimizer.method", self.method, OPTIMIZERS)


class JobTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A job template: one circuit, or an ansatz with a Hamiltonian and an optimizer.

    Attributes:
        name: Identifier.
        description: One sentence for people.
        on_job: Run options of the jobs.
        circuit: OpenQASM 3 text (exclusive with ``ansatz``).
        ansatz: A trial circuit by kind (exclusive with ``circuit``).
        hamiltonian: Pauli terms, all of the same length (= the qubit count).
        optimizer: For a variational template.
    """

    name: Name
    description: str = ""
    on_job: OnJob = OnJob()
    circuit: str | None = None
    ansatz: Ansatz | None = None
    hamiltonian: list[HamiltonianTerm] = []
    optimizer: Optimizer | None = None

    def __post_init__(self) -> None:
        if (self.circuit is None) == (self.ansatz is None):
            raise ValueError("give exactly one of 'circuit' and 'ansatz'")
        widths = {len(t.pauli) for t in self.hamiltonian}
        if len(widths) > 1:
            raise ValueError(f"hamiltonian terms have different lengths {sorted(widths)}")
        if self.ansatz is not None and widths and widths != {self.ansatz.qubits}:
            raise ValueError(
                f"hamiltonian acts on {widths.pop()} qubits, the ansatz on {self.ansatz.qubits}"
            )
        if self.on_job.method == "expectation" and not self.hamiltonian:
            raise ValueError("method 'expectation' needs a 'hamiltonian'")
        if self.optimizer is not None and self.ansatz is None:
            raise ValueError("an 'optimizer' needs an 'ansatz' to optimise")


def template_json_schema() -> dict[str, Any]:
    """JSON Schema of ``JobTemplate`` (for other tools and for prompts)."""
    return msgspec.json.schema(JobTemplate)


def validate_template(text: str) -> JobTemplate:
    """Parse YAML text and validate it as a job template.

    A ``circuit`` is also parsed with the ingest parser.

    Raises:
        SchemaError: Not YAML, or not a valid template; ``where`` is the field path.
        CircuitError: The ``circuit`` does not parse (line/column).
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
        raise SchemaError("the template must be a YAML mapping")
    try:
        template = msgspec.convert(data, JobTemplate)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.split(" - at `", 1)[1].rstrip("`") if " - at `" in message else None
        raise SchemaError(f"invalid job template: {message}", where=where) from exc
    if template.circuit is not None:
        from qbus.schemas.qasm import parse_qasm

        parse_qasm(template.circuit)
    return template
