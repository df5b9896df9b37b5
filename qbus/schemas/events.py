"""Every event on the bus: one tagged union of frozen msgspec Structs, JSON on the wire.

Evolution rules (docs/protocol.md): a new field always has a default; a field's type
never changes; a tag is never reused; a breaking change is a new tag (``….v2``).
Unknown fields are ignored on decode, so old consumers read newer producers.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from typing import Annotated, Any, TypeVar

import msgspec

from qbus.schemas import schema_text
from qbus.schemas.ai import AiRewriteReport
from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec
from qbus.schemas.enums import (
    DeadLetterCause,
    Hypervisor,
    Lane,
    Method,
    Priority,
    ProgramFormat,
    RanDriver,
    SourceFormat,
    Verdict,
)
from qbus.schemas.ir import Circuit, CircuitStats
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable, PauliTerm
from qbus.schemas.sweep import SweepPoint

__all__ = [
    "AiRewriteReport",
    "DynamicsResult",
    "DynamicsSpec",
    "NoiseModel",
    "Observable",
    "PauliTerm",
    "SweepPoint",
]

SCHEMA_VERSION = 1

# Job ids become NATS subject tokens (``qbus.result.<job>``), so they are restricted to
# characters that are safe there and in KV keys.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
JobId = Annotated[str, msgspec.Meta(pattern=JOB_ID_PATTERN, description="subject-safe job id")]

# A job's resource limits are positive: zero or negative were once read as "not set"
# and silently became the operator's cap, so the decode refuses them (``invalid_limit``).
MemoryLimit = Annotated[int, msgspec.Meta(gt=0, description="MiB")]
SecondsLimit = Annotated[float, msgspec.Meta(gt=0, description="seconds")]

# uuid5 namespace for ids derived from a causing event: a redelivered input yields the
# same output ids, which the server's Nats-Msg-Id dedupe then drops.
_DERIVED_NS = uuid.UUID("6f1c2d3e-8a4b-5c6d-9e0f-7a8b9c0d1e2f")


def new_event_id() -> str:
    """A fresh random event id."""
    return str(uuid.uuid4())


_DERIVED_NS_BYTES = _DERIVED_NS.bytes


def derived_event_id(
    causation_id: str, tag: str, index: int = 0, *, job_id: str, tenant: str = ""
) -> str:
    """The id of the ``index``-th event of kind ``tag`` of ``job_id`` caused by ``causation_id``.

    ``uuid.uuid5(_DERIVED_NS, f"{tenant}/{job_id}/{causation_id}/{tag}/{index}")`` as
    text, computed directly: every stage derives several ids per job, and building a
    ``UUID`` object cost three times as much as the hash (tests/test_schemas.py checks
    both agree). The job and tenant are part of the name so that two jobs (or tenants)
    whose inputs share an event id never derive the same ids: the server's duplicate
    window would drop the second job's events (issue 17). Neither can hold a ``/``.
    """
    name = f"{tenant}/{job_id}/{causation_id}/{tag}/{index}"
    digest = bytearray(hashlib.sha1(_DERIVED_NS_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def answer(cause: Event, event_type: type[E], producer: str, **fields: Any) -> E:
    """The event a stage publishes in answer to ``cause``.

    Same job, caused by ``cause``, with the id ``derived_event_id(cause, tag)`` scoped by
    the job and the cause's tenant: a redelivered ``cause`` gets an answer with the same
    id, which the server drops as a duplicate (``Nats-Msg-Id``), so each stage answers an
    event once.

    Args:
        cause: The event answered.
        event_type: The answer's class (``JobFailed`` …).
        producer: Who answers (``qbus.verify`` …).
        **fields: The answer's own fields.
    """
    return event_type(
        event_id=derived_event_id(
            cause.event_id,
            tag_of(event_type),
            job_id=cause.job_id,
            tenant=getattr(cause, "tenant", ""),
        ),
        job_id=cause.job_id,
        causation_id=cause.event_id,
        producer=producer,
        **fields,
    )


def default_seed(job_id: str) -> int:
    """The seed of a job that gives none: derived from its job id, so a rerun of the job
    gives the same counts (ingest fills it in)."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


def new_job_id() -> str:
    """A fresh job id (32 hex characters)."""
    return uuid.uuid4().hex


def is_valid_job_id(job_id: str) -> bool:
    """True when ``job_id`` can be used as a subject token."""
    return bool(_JOB_ID_RE.match(job_id))


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope carried by every event.

    Attributes:
        event_id: Unique id; sent as ``Nats-Msg-Id`` so the server drops duplicates.
        job_id: The job this event belongs to.
        causation_id: Id of the event this one answers (None for a submission).
        schema_version: Version of the event schema the producer wrote.
        timestamp: Seconds since the Unix epoch when the producer made the event.
        producer: Who made it (``qbus.ingest``, ``cli``, ``node-client`` …).
    """

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    job_id: JobId
    causation_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    timestamp: float = msgspec.field(default_factory=time.time)
    producer: str = ""


E = TypeVar("E", bound=Event)
"""Any event class (``answer``'s return type)."""


class JobOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a job runs; set at submission and carried by every later event.

    Attributes:
        method: ``sample`` (shots → counts), ``statevector``, ``expectation``,
            ``sweep`` or ``dynamics`` (``qbus.schemas.enums.Method``).
        shots: Number of shots for ``sample``.
        seed: Simulator seed; when None, ingest derives one from the job id so that a
            rerun (redelivery, audit replay) gives the same counts.
        engine: Engine name, or ``auto`` to let the router choose.
        optimize: Run the deterministic rewrite passes.
        parameters: Values of the circuit's named parameters.
        hypervisor: Sandbox driver for the engine code (``inline``, ``process``,
            ``bwrap``), or ``auto`` for the engine's policy default; the operator's
            minimum can raise it (docs/hypervisor.md).
        memory_mb: Memory limit of the run in MiB (None: the operator's cap).
        cpu_seconds: CPU-time limit of the run (None: the operator's cap).
        wall_seconds: Wall-clock limit of the run (None: the operator's cap).
        observables: For ``expectation``: Pauli-sum observables to evaluate on the
            final state.
        noise: Noise model for engines that simulate noise (None: noiseless).
        sweep: For ``sweep``: one parameter set per point; each point is run with
            ``parameters`` updated by it.
        dynamics: For ``dynamics``: Hamiltonian, collapse operators, times, observables.
        cross_check: Re-run on a second engine and fail the job when the two disagree
            beyond the statistical tolerance.
        ai_optimize: Ask the AI assistant for a rewrite (accepted only when proven
            equivalent).
        priority: ``high``, ``normal`` or ``low``: high jobs are fetched first by the
            executors (docs/routing.md).
        cache: Answer from the result cache when it holds this job's result; False
            always runs it (docs/routing.md).
        chunk_size: For a long job (``sweep``): points per chunk; the router splits
            the job into chunks of this many points (None: the operator's
            ``[chunks] points``). For a ``sample`` job whose circuit runs shot by shot
            (``qbus.schemas.ir.shot_by_shot``): shots per chunk (None: chunks sized by
            the predicted run time, ``[chunks] shot_seconds``; docs/long-jobs.md).
        tenant: The tenant the job belongs to, set by ingest from the submit subject
            (``qbus.submit.<tenant>``); empty for ``qbus.submit`` (docs/security.md).
    """

    method: Method = "sample"
    shots: int = 1024
    seed: int | None = None
    engine: str = "auto"
    optimize: bool = True
    parameters: dict[str, float] = {}
    hypervisor: Hypervisor = "auto"
    memory_mb: MemoryLimit | None = None
    cpu_seconds: SecondsLimit | None = None
    wall_seconds: SecondsLimit | None = None
    observables: list[Observable] = []
    noise: NoiseModel | None = None
    sweep: list[dict[str, float]] = []
    dynamics: DynamicsSpec | None = None
    cross_check: bool = False
    ai_optimize: bool = False
    priority: Priority = "normal"
    tenant: str = ""
    cache: bool = True
    chunk_size: int | None = None


class JobSubmitted(Event, tag="job.submitted"):
    """A new job. Give ``source`` (OpenQASM 2/3 or JSON IR text) or ``circuit`` (inline IR).

    Attributes:
        source: Program text.
        format: ``auto``, ``qasm2``, ``qasm3``, ``json`` or ``quil``.
        circuit: The circuit as inline JSON IR instead of ``source``.
        method, shots, seed, engine, optimize, parameters: See ``JobOptions``.
        labels: Free-form labels, kept on the job.
        hypervisor, memory_mb, cpu_seconds, wall_seconds: See ``JobOptions``.
        observables: For ``method="expectation"``: the observables to evaluate.
        noise, sweep, dynamics, cross_check, ai_optimize, priority, cache, chunk_size:
            See ``JobOptions``.
        tenant: Ignored on input: ingest overwrites it with the tenant of the subject the
            submission arrived on (``qbus.submit.<tenant>``), which NATS permissions
            guard; a producer that sets it publishes to that subject.
    """

    source: str | None = None
    format: SourceFormat = "auto"
    circuit: Circuit | None = None
    method: Method = "sample"
    shots: int = 1024
    seed: int | None = None
    engine: str = "auto"
    optimize: bool = True
    parameters: dict[str, float] = {}
    labels: dict[str, str] = {}
    hypervisor: Hypervisor = "auto"
    memory_mb: MemoryLimit | None = None
    cpu_seconds: SecondsLimit | None = None
    wall_seconds: SecondsLimit | None = None
    observables: list[Observable] = []

    noise: NoiseModel | None = None
    sweep: list[dict[str, float]] = []
    dynamics: DynamicsSpec | None = None
    cross_check: bool = False
    ai_optimize: bool = False
    priority: Priority = "normal"
    tenant: str = ""
    cache: bool = True
    chunk_size: int | None = None

    def options(self) -> JobOptions:
        """The run options this submission asks for (every JobOptions field, by name)."""
        return JobOptions(**{name: getattr(self, name) for name in JobOptions.__struct_fields__})


class CircuitIngested(Event, tag="circuit.ingested"):
    """The submission parsed into validated IR."""

    circuit: Circuit
    circuit_hash: str
    source_format: ProgramFormat
    options: JobOptions
    stats: CircuitStats


class PassReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one rewrite pass changed."""

    name: str
    removed: int
    merged: int = 0


class CircuitRewritten(Event, tag="circuit.rewritten"):
    """The circuit after the deterministic rewrite passes (or unchanged when skipped)."""

    circuit: Circuit
    circuit_hash: str
    original_hash: str
    options: JobOptions
    before: CircuitStats
    after: CircuitStats
    passes: list[PassReport] = []
    ai: AiRewriteReport | None = None


class ExecutionRequested(Event, tag="execution.requested"):
    """Run this circuit on ``engine``; published on ``qbus.exec.<engine>.<job>``.

    Attributes:
        generation: Bumped by each reroute; an executor's result of an older generation
            is dropped.
        route_reason: Why the router picked this engine (for ``auto``: the predicted
            times of the runners-up too).
        predicted_seconds: The cost model's predicted run time on ``engine`` (None when
            the router made no prediction).
        chunk: For a long job split into chunks: this chunk's index (None: not chunked).
            ``options.sweep`` then holds only the chunk's points, or, for a shot chunk,
            ``options.shots`` only the chunk's shots and ``options.seed`` the chunk's
            own seed (docs/long-jobs.md).
        chunks: How many chunks the job has.
        point_start: First point of the job's sweep in this chunk.
        point_stop: One past the chunk's last point.
        shot_start: For a shot chunk of a shot-by-shot ``sample`` job: the job's first
            shot in this chunk (None: not a shot chunk).
        shot_stop: One past the chunk's last shot.
        attempt: 0 for the first run; k for the k-th retry after a transient engine
            failure (published by the verify stage, docs/operations.md).
        lane: ``heavy`` when the whole job's predicted run time reaches ``[lanes]
            heavy_seconds``: then it is published on ``qbus.exec.<engine>.heavy.<job>``
            and runs in the executors' heavy slots, never in the light lane's worker
            (docs/routing.md). Chunks of a job carry the whole job's lane.
    """

    engine: str
    circuit: Circuit
    circuit_hash: str
    options: JobOptions
    generation: int = 0
    route_reason: str = ""
    predicted_seconds: float | None = None
    chunk: int | None = None
    chunks: int | None = None
    point_start: int | None = None
    point_stop: int | None = None
    attempt: int = 0
    shot_start: int | None = None
    shot_stop: int | None = None
    lane: Lane = "light"


class ExecutionCompleted(Event, tag="execution.completed"):
    """An engine's raw result.

    Attributes:
        counts: Bitstring → count for ``sample`` (clbit 0 rightmost).
        statevector: Interleaved real/imaginary parts, for ``statevector`` up to the
            inline limit; larger vectors are in the object store under ``statevector_ref``.
        seed: The seed the engine actually used.
        run_seconds: Wall time of the engine call.
        hypervisor: The sandbox driver that ran it (``inline``, ``process``, ``bwrap``).
        peak_rss_mb: Peak resident memory of the sandboxed process in MiB (None inline).
        cpu_seconds: CPU seconds the run used, all threads (None inline).
        wall_seconds: Wall time of the run as the sandbox saw it, start-up included.
        chunk, chunks, point_start, point_stop, shot_start, shot_stop: Copied from the
            chunk's ExecutionRequested (None: not chunked).
    """

    engine: str
    engine_version: str
    circuit: Circuit
    circuit_hash: str
    options: JobOptions
    seed: int
    counts: dict[str, int] | None = None
    statevector: list[float] | None = None
    statevector_ref: str | None = None
    run_seconds: float = 0.0
    generation: int = 0
    hypervisor: RanDriver = ""
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    expectations: list[float] | None = None
    sweep_results: list[SweepPoint] | None = None
    dynamics: DynamicsResult | None = None
    chunk: int | None = None
    chunks: int | None = None
    point_start: int | None = None
    point_stop: int | None = None
    shot_start: int | None = None
    shot_stop: int | None = None


class ExecutionFailed(Event, tag="execution.failed"):
    """An engine could not run the request.

    Attributes:
        retryable: A transient failure (a throttled cloud engine, a crashed sandbox
            worker): the verify stage asks for the run again with backoff, up to
            ``[retries] max_attempts`` runs in all (docs/operations.md).
        attempt: The failed request's ``attempt``.
    """

    engine: str
    code: str
    message: str
    retryable: bool = False
    generation: int = 0
    chunk: int | None = None
    attempt: int = 0


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """The verifier's verdict on a result.

    Attributes:
        verdict: ``pass``, ``fail`` or ``skipped`` (with ``detail`` saying why).
        test: Name of the test (``chi2``, ``fidelity``).
        statistic: Test statistic (chi-square value, or fidelity).
        p_value: For statistical tests.
        threshold: The bound the statistic was held to.
        tvd: Total variation distance between observed and exact distributions.
        detail: Human-readable explanation.
        cross_engine: The second engine of a cross-engine check, when one ran.
        cross_verdict: ``pass`` or ``fail`` of the cross-engine agreement check, or
            ``skipped`` when it could not run (``cross_detail`` says why).
        cross_detail: What the cross-engine check found.
    """

    verdict: Verdict
    test: str = ""
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    tvd: float | None = None
    detail: str = ""
    cross_engine: str | None = None
    cross_verdict: Verdict | None = None
    cross_detail: str = ""


class JobCompleted(Event, tag="job.completed"):
    """The final, verified result of a job: published on ``qbus.result.<job>``.

    ``cached`` marks a result the route stage answered from the result cache without
    running an engine; ``cached_from`` is the job whose run produced it.

    ``chunk_engines`` is set for a job that ran in chunks (docs/long-jobs.md): chunk
    index (as a string) → the engine whose result was used for it.

    ``result_hash`` (``sha256:<hex>``) is recomputable from this event alone with hash
    version ``hash_version`` (docs/protocol.md): 2 hashes RFC 8785 canonical JSON; 1,
    the default, is the legacy encoding of events written before the field existed.
    """

    engine: str
    engine_version: str
    circuit_hash: str
    method: Method
    shots: int
    seed: int
    verification: Verification
    result_hash: str
    # Absent in events written before version 2: those decode as version 1 hashes.
    hash_version: int = 1
    counts: dict[str, int] | None = None
    statevector: list[float] | None = None
    statevector_ref: str | None = None
    run_seconds: float = 0.0
    expectations: list[float] | None = None
    sweep_results: list[SweepPoint] | None = None
    dynamics: DynamicsResult | None = None
    # The noise model the result ran under (None: noiseless); part of the result hash.
    noise: NoiseModel | None = None
    tenant: str = ""
    cached: bool = False
    cached_from: str | None = None
    chunk_engines: dict[str, str] = {}


class JobFailed(Event, tag="job.failed"):
    """The job ended without a result: engine failure, failed verification, cancel.

    ``tenant`` (on every final event) is the job's tenant; a tenant's final events are
    also published on ``qbus_tenant.<tenant>.result.<job>`` (docs/security.md).
    """

    code: str
    message: str
    stage: str = ""
    tenant: str = ""


class JobRejected(Event, tag="job.rejected"):
    """The submission was refused before running: bad input or limits.

    Attributes:
        code: Stable error code (``qasm_syntax``, ``unknown_gate``, ``invalid_schema`` …).
        message: What is wrong, for a person.
        where: Line/column or field path of the problem.
        refusal: Set when the rejection answers a message that holds no job (not a
            submission, an unknown submit subject, a job id already in use): the
            message's key (its ``Nats-Msg-Id``, else ``seq-<stream sequence>``). Such a
            rejection is published on ``qbus.refused.<refusal>``, never on the result
            subject of ``job_id``, which may be another sender's job (docs/protocol.md).
    """

    code: str
    message: str
    stage: str = ""
    where: str | None = None
    tenant: str = ""
    refusal: str | None = None


class ResultAnchored(Event, tag="result.anchored"):
    """A job's result hash is in a Merkle batch whose root is on chain.

    Published on ``qbus.anchored.<job>`` after the job's final event. The proof is the
    list of sibling hashes from the leaf up; ``leaf_index`` says at each level whether
    the node is a left (even) or right (odd) child (docs/chain.md gives the hashing).

    Attributes:
        result_hash: The job's result hash (the Merkle leaf's preimage).
        batch_id: The contract's batch number.
        root: The Merkle root anchored on chain (0x-hex).
        proof: Sibling hashes from the leaf level up (0x-hex).
        leaf_index: Position of this result in the batch.
        batch_size: Number of results in the batch.
        tx_hash: The anchoring transaction.
        block_number: The block that holds it.
        chain_id: The chain's id.
        contract: The anchor contract's address.
    """

    result_hash: str
    batch_id: int
    root: str
    proof: list[str]
    leaf_index: int
    batch_size: int
    tx_hash: str
    block_number: int
    chain_id: int
    contract: str


class Reroute(Event, tag="control.reroute"):
    """Move the job's unfinished work to another engine."""

    engine: str
    reason: str = ""


class Cancel(Event, tag="control.cancel"):
    """Stop the job; it ends with JobFailed(code='cancelled')."""

    reason: str = ""


class DeadLetter(Event, tag="dead.letter"):
    """A message a stage gave up on after ``max_deliver`` deliveries; published on
    ``qbus.dlq.<stage>.<job>`` (docs/operations.md, "Retries and dead letters").

    The message itself stays in the event log at ``stream_seq``: ``qbus dlq show`` reads
    it from there, ``qbus dlq replay`` publishes it again.

    Attributes:
        stage: The stage whose handler gave up (``route``, ``execute`` …).
        consumer: Its durable consumer.
        stream: The stream holding the message.
        subject: The message's subject.
        stream_seq: The message's sequence in ``stream``.
        deliveries: How many times it was delivered.
        reason: The last error text, or why no outcome came (a timeout).
        cause: ``handler_error`` (the handler raised on the last delivery) or
            ``max_deliveries`` (no outcome within ``ack_wait``: a hung handler or a
            stage process that died; from the server's advisory).
        original_type: The message's event type, empty when it does not decode.
    """

    stage: str
    consumer: str
    stream: str
    subject: str
    stream_seq: int
    deliveries: int
    reason: str
    cause: DeadLetterCause = "handler_error"
    original_type: str = ""


class ControlRejected(Event, tag="control.rejected"):
    """The control stage refused a Reroute or Cancel; the job goes on as before.

    Published on ``qbus.control.<job>`` with ``causation_id`` = the refused event.

    Attributes:
        code: ``job_finished``, ``unknown_job``, ``not_routed``, ``engine_not_deployed``,
            ``engine_incapable`` or ``nothing_to_reroute``.
        message: What happened, for a person.
        request: ``control.reroute`` or ``control.cancel``.
    """

    code: str
    message: str
    request: str = ""


AnyEvent = (
    JobSubmitted
    | CircuitIngested
    | CircuitRewritten
    | ExecutionRequested
    | ExecutionCompleted
    | ExecutionFailed
    | JobCompleted
    | JobFailed
    | JobRejected
    | ResultAnchored
    | Reroute
    | Cancel
    | ControlRejected
    | DeadLetter
)

EVENT_TYPES: tuple[type[Event], ...] = (
    JobSubmitted,
    CircuitIngested,
    CircuitRewritten,
    ExecutionRequested,
    ExecutionCompleted,
    ExecutionFailed,
    JobCompleted,
    JobFailed,
    JobRejected,
    ResultAnchored,
    Reroute,
    Cancel,
    ControlRejected,
    DeadLetter,
)

FINAL_EVENTS: tuple[type[Event], ...] = (JobCompleted, JobFailed, JobRejected)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """Encode an event to its JSON wire form."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode any event from its JSON wire form.

    Raises:
        msgspec.ValidationError: The JSON does not match any event (message names the path).
        msgspec.DecodeError: Not JSON at all.
    """
    return _decoder.decode(data)


def tag_of(event_type: type[Event]) -> str:
    """The wire tag of an event class."""
    return event_type.__struct_config__.tag  # type: ignore[return-value]


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every event, keyed by tag, sharing one ``$defs`` table.

    Each event's schema is its full object schema (not a ``$ref``), so a client can
    validate one event type with ``{**events[tag], "$defs": defs}``.
    """
    refs, components = schema_text.schema_components(EVENT_TYPES, ref_template="#/$defs/{name}")
    events = {
        tag_of(t): components[ref["$ref"].rsplit("/", 1)[1]]
        for t, ref in zip(EVENT_TYPES, refs, strict=True)
    }
    return {"union": schema_text.schema(AnyEvent), "events": events, "$defs": components}
