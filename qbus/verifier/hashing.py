"""The result hash: one sha256 that names a result, the same in every process.

It covers what produced the result (circuit hash, engine and its version, method,
shots, seed) and the result itself (counts, and a digest of the state vector), so it
can be recomputed by anyone from a ``JobCompleted`` event and anchored on chain.

Version 2 (``HASH_VERSION``) hashes the RFC 8785 canonical JSON of that document
(JSON Canonicalization Scheme: sorted keys, no whitespace, numbers as JavaScript's
``JSON.stringify`` writes them), so a client in any language recomputes it with a
standard canonicaliser; docs/protocol.md gives the document field by field. Version 1
hashed msgspec's deterministic JSON, which writes ``5.0`` where JavaScript writes ``5``:
no client outside Python could recompute a result with floats. Every ``JobCompleted``
records the version its hash used (``hash_version``; absent, as in logs written before
version 2, means 1), and every check recomputes with that version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import rfc8785

from qbus.schemas.dynamics import DynamicsResult
from qbus.schemas.events import ExecutionCompleted, JobCompleted
from qbus.schemas.noise import NoiseModel
from qbus.schemas.sweep import SweepPoint

HASH_VERSION = 2
"""The version a fresh result is hashed with: part of the hashed document (``v``), and
recorded on the ``JobCompleted`` (``hash_version``). Bumped whenever the document or
its encoding changes."""

HASH_VERSIONS = (1, 2)
"""Every version this code can recompute: an audit of an older log still verifies."""

_v1_encoder = msgspec.json.Encoder(order="deterministic")

# RFC 8785 holds numbers as IEEE 754 doubles (as JavaScript's JSON.parse reads them):
# an integer past 2**53 - 1 (a seed may be up to 2**63 - 1) is hashed as its double.
_SAFE_INT = 2**53 - 1


class _HashInput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    # Encoded in this field order (deterministic order sorts mapping keys, not struct
    # fields): never reorder or rename a field without bumping HASH_VERSION.
    v: int
    circuit_hash: str
    engine: str
    engine_version: str
    method: str
    shots: int
    seed: int
    counts: dict[str, int] | None
    statevector: str | None
    statevector_ref: str | None
    # Added later with a default, omitted when absent: earlier hashes stay valid.
    expectations: list[float] | None = None
    # The noise model a noisy result ran under, and a dynamics job's values: omitted
    # when absent, like ``expectations``.
    noise: NoiseModel | None = None
    dynamics: DynamicsResult | None = None
    # A sweep's per-point results, in point order; omitted when absent.
    sweep_results: list[SweepPoint] | None = None


def _as_doubles(value: object) -> object:
    """``value`` with every number as a JSON reader holding doubles sees it.

    An integer past 2**53 - 1 becomes its nearest double, and a NaN or infinity
    becomes ``None`` (the wire form writes them as ``null``).
    """
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _SAFE_INT:
        return float(value)
    return value


def canonical_json(value: object) -> bytes:
    """RFC 8785 canonical JSON of ``value`` (builtins: dict, list, str, numbers, None).

    Args:
        value: A JSON-like value, as ``msgspec.to_builtins`` gives it.
    """
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError:
        # Rare (a seed past 2**53, a non-finite float): walk the value only then.
        return rfc8785.dumps(_as_doubles(value))  # type: ignore[arg-type]


def _encode(doc: _HashInput, version: int) -> bytes:
    if version == 1:
        return _v1_encoder.encode(doc)
    return canonical_json(msgspec.to_builtins(doc))


def statevector_digest(statevector: np.ndarray | Sequence[float]) -> str:
    """``sha256:<hex>`` of a state vector's float64 little-endian bytes.

    A complex array is taken as interleaved real/imaginary parts, the same layout as
    the float list in ``ExecutionCompleted.statevector`` and the same bytes as the
    object-store form (``complex128`` little-endian), so every form of one vector gives
    one digest.

    Args:
        statevector: Complex amplitudes, or interleaved real/imaginary floats.
    """
    arr = np.asarray(statevector)
    if np.iscomplexobj(arr):
        arr = np.ascontiguousarray(arr, dtype=np.complex128).reshape(-1).view(np.float64)
    flat = np.ascontiguousarray(arr, dtype="<f8").reshape(-1)
    return "sha256:" + hashlib.sha256(flat.tobytes()).hexdigest()


def result_hash(
    *,
    circuit_hash: str,
    engine: str,
    engine_version: str,
    method: str,
    shots: int,
    seed: int,
    counts: Mapping[str, int] | None = None,
    statevector: np.ndarray | Sequence[float] | None = None,
    statevector_sha256: str | None = None,
    statevector_ref: str | None = None,
    expectations: Sequence[float] | None = None,
    noise: NoiseModel | None = None,
    dynamics: DynamicsResult | None = None,
    sweep_results: Sequence[SweepPoint] | None = None,
    version: int = HASH_VERSION,
) -> str:
    """The result's identity: ``sha256:<hex>`` over its canonical JSON document.

    Args:
        circuit_hash: Hash of the circuit that ran.
        engine: Engine name.
        engine_version: Engine version.
        method: ``sample`` or ``statevector``.
        shots: Shots requested.
        seed: Seed used.
        counts: Sampled counts (key order does not matter).
        statevector: The state vector (complex, or interleaved real/imaginary floats).
        statevector_sha256: Its ``statevector_digest`` instead, when only that is at
            hand (a vector held in the object store).
        statevector_ref: Where a vector too large for the event is stored; hashed as
            given, so the hash pins the reference when the vector itself is not at hand.
        expectations: Expectation values of an ``expectation`` job.
        noise: The job's noise model, when it has one.
        dynamics: A ``dynamics`` job's times and values.
        sweep_results: A ``sweep`` job's per-point counts or expectation values.
        version: The hash version (``HASH_VERSIONS``): a fresh result's is
            ``HASH_VERSION``; a recorded hash is recomputed with its recorded version.

    Raises:
        ValueError: Both ``statevector`` and a different ``statevector_sha256`` given,
            or a version this code does not know.
    """
    if version not in HASH_VERSIONS:
        raise ValueError(f"unknown result hash version {version} (known: {HASH_VERSIONS})")
    digest = statevector_sha256
    if statevector is not None:
        computed = statevector_digest(statevector)
        if digest is not None and digest != computed:
            raise ValueError("statevector and statevector_sha256 disagree")
        digest = computed
    doc = _HashInput(
        v=version,
        circuit_hash=circuit_hash,
        engine=engine,
        engine_version=engine_version,
        method=method,
        shots=int(shots),
        seed=int(seed),
        counts={str(k): int(c) for k, c in counts.items()} if counts is not None else None,
        statevector=digest,
        statevector_ref=statevector_ref,
        expectations=[float(x) for x in expectations] if expectations is not None else None,
        noise=noise,
        dynamics=dynamics,
        sweep_results=list(sweep_results) if sweep_results is not None else None,
    )
    return "sha256:" + hashlib.sha256(_encode(doc, version)).hexdigest()


def event_result_hash(event: ExecutionCompleted | JobCompleted, version: int | None = None) -> str:
    """The result hash of an engine's result or of a job's final event, from its fields.

    The one place that maps event fields onto ``result_hash``: the verify stage hashes
    the ExecutionCompleted it answers with it, and ``qbus audit verify`` re-derives
    both sides from the log with it, so the two can never drift apart.

    Args:
        event: An ExecutionCompleted (method and shots from its options) or a
            JobCompleted (method and shots as recorded on it).
        version: The hash version; None: a JobCompleted's recorded ``hash_version``,
            ``HASH_VERSION`` for an ExecutionCompleted (which records none).

    Raises:
        ValueError: The version is not one of ``HASH_VERSIONS``.
    """
    if isinstance(event, ExecutionCompleted):
        method, shots = event.options.method, event.options.shots
        noise = event.options.noise
        recorded = HASH_VERSION
    else:
        method, shots = event.method, event.shots
        noise = event.noise
        recorded = event.hash_version
    return result_hash(
        circuit_hash=event.circuit_hash,
        engine=event.engine,
        engine_version=event.engine_version,
        method=method,
        shots=shots,
        seed=event.seed,
        counts=event.counts,
        statevector=event.statevector,
        statevector_ref=event.statevector_ref,
        expectations=event.expectations,
        noise=noise,
        dynamics=event.dynamics,
        sweep_results=event.sweep_results,
        version=recorded if version is None else version,
    )
