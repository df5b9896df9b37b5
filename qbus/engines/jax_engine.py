"""The jax engine: qbus's own state-vector simulator, jitted once per circuit structure.

The state is a ``[2] * n`` tensor (qubit ``q`` is axis ``n - 1 - q``, so qubit 0 is the
least significant bit of the flattened index, as everywhere in qbus). Before tracing,
a plan fuses the circuit's gates into blocks of at most ``max_fused_qubits`` qubits:
one-qubit gates wait (they commute with everything not on their qubit) until the next
multi-qubit gate on that qubit takes them in, and consecutive multi-qubit gates whose
qubits fit in one block share a single matrix. Each block is applied as elementwise
sums over the slices that fix its qubits (``jax_blocks``), skipping the entries that are
zero for every angle: one fused loop, one pass over the state, where a ``tensordot``
on the CPU cost a transpose, a slow complex matrix product and a transpose back.

The whole circuit is compiled by ``jax.jit`` once per *structure* (gate names and
qubits, not angles): the angles are a traced float vector, so a circuit run again with
other parameter values reuses the compiled function. Compiled functions sit in an LRU
cache; ``cache_misses`` counts compilations. ``sweep`` runs many parameter sets in one
call through ``jax.vmap``.

JAX is imported here only; without it, importing this module raises
``MissingOptionalLibraryError`` with the install hint.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest, memory_width
from qbus.engines.params import numeric_params
from qbus.engines.reference import clbit_sources
from qbus.engines.results import state_result
from qbus.engines.sweep import point_parameters, point_seed, slot_table
from qbus.errors import MissingOptionalLibraryError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable
from qbus.schemas.sweep import SweepPoint

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("jax", "jax", "the jax engine") from exc

from qbus.engines.jax_blocks import apply_block, block_pattern
from qbus.engines.jax_dynamics import (
    MAX_CLOSED_QUBITS,
    check_dynamics_request,
    run_dynamics,
)
from qbus.engines.jax_gates import jax_matrix
from qbus.engines.jax_precision import highest_precision
from qbus.engines.jax_sweep import build_sweep_fn, chunk_size

DTYPES = ("complex64", "complex128")
"""State dtypes the engine computes in."""

# 2**30 complex128 amplitudes are 16 GiB; past that a single job would starve the node.
_MAX_QUBITS = 30
# A fused block's pass holds the state, its output and a temporary of the same size.
_STATE_COPIES = 3

# Blocks of up to this many qubits are fused into one matrix, applied elementwise
# (``jax_blocks``): a k-qubit block costs up to 2**k multiply-adds per amplitude in one
# pass over the state. Measured at 20 qubits, complex128, warm best of 4 interleaved
# with qsim in one process, quiet 2-core machine (load 1.5-1.7, the run's own), on
# 2026-12-08 with the planner of ``_plan``: 3 beat 2 on every family (random 188 ms
# against 242, QFT 94 against 156, layered 433 against 703, Trotter 42 against 50) and
# beat 4 on all but GHZ (random 200 against 420 ms: a 4-qubit block is compute-bound).
DEFAULT_FUSED_QUBITS = 3

# Under vmap every block is a batch of small matmuls, where 4-qubit blocks measured
# fastest (12 qubits x 256 points: 0.074 s against 0.11 s for 5 and 0.125 s for 2).
SWEEP_FUSED_QUBITS = 4

_CACHE_SIZE = 64

# A sweep runs in vmapped batches of at most this many amplitudes (256 MiB in
# complex128), so a 100 000-point sweep never holds every state at once.
_SWEEP_AMPLITUDES = 1 << 24

_SKIP = frozenset({"measure", "barrier", "reset"})


# -------------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class _Gate:
    name: str
    qubits: tuple[int, ...]
    offset: int  # where its angles start in the flat parameter vector


@dataclass(eq=False, slots=True)
class _Block:
    position: int  # blocks run in this order
    qubits: set[int] = field(default_factory=set)
    gates: list[_Gate] = field(default_factory=list)
    merged: bool = False  # its gates moved into a later block


Structure = tuple[int, tuple[tuple[str, tuple[int, ...]], ...]]


def structure_of(circuit: Circuit) -> Structure:
    """The circuit's compile key: its width and the names and qubits of its gates."""
    return circuit.num_qubits, tuple(
        (op.name, op.qubits) for op in circuit.ops if op.name not in _SKIP
    )


def _plan(structure: Structure, max_fused: int) -> list[tuple[tuple[int, ...], list[_Gate]]]:
    """Group the gates into blocks of at most ``max_fused`` qubits, in running order.

    Returns ``(sorted block qubits, gates in order)`` per block. A block is *open* while
    it is the last block on every one of its qubits: nothing after it touches them, so
    it may move later in the run. A gate joins the latest open block on its qubits when
    that block runs after every other block on them and the union fits; otherwise it
    starts a new block. Either way it also takes in the other open blocks on its qubits
    that fit (smallest first), so a one-qubit gate waits for the next gate on its qubit
    and independent two-qubit gates that share a qubit later end in one block. On the
    benchmark's 20-qubit random circuits this halved the blocks against filling one
    block at a time in gate order (198 to 110 at 3 qubits, 100 to 67 at 4).
    """
    _, ops = structure
    size = max(max_fused, 1)
    blocks: list[_Block] = []
    last: dict[int, _Block] = {}  # the last block on each qubit

    def is_open(block: _Block) -> bool:
        return all(last[q] is block for q in block.qubits)

    offset = 0
    for name, qubits in ops:
        gate = _Gate(name, qubits, offset)
        offset += GATES[name].num_params
        touched = list(dict.fromkeys(last[q] for q in qubits if q in last))
        movable = [b for b in touched if is_open(b)]
        after = max((b.position for b in touched if b not in movable), default=-1)
        target = max(movable, key=lambda b: b.position, default=None)
        if target is None or target.position < after or len(target.qubits | set(qubits)) > size:
            target = _Block(position=len(blocks))
            blocks.append(target)
        union = target.qubits | set(qubits)
        for b in sorted(movable, key=lambda b: len(b.qubits)):
            # Open blocks hold disjoint qubits, so their gates commute with the target's.
            if b is not target and len(union | b.qubits) <= size:
                union |= b.qubits
                target.gates[:0] = b.gates
                b.merged = True
        target.gates.append(gate)
        target.qubits = union
        for q in union:
            last[q] = target
    # At the end every open block may run last: pack the small ones together.
    packed: list[_Block] = []
    for b in sorted(
        (b for b in blocks if not b.merged and is_open(b)), key=lambda b: len(b.qubits)
    ):
        into = next((p for p in packed if len(p.qubits | b.qubits) <= size), None)
        if into is None:
            packed.append(b)
        else:
            into.qubits |= b.qubits
            into.gates.extend(b.gates)
            into.position = max(into.position, b.position)
            b.merged = True
    kept = sorted((b for b in blocks if not b.merged), key=lambda b: b.position)
    return [(tuple(sorted(b.qubits)), b.gates) for b in kept]


# ------------------------------------------------------------------------------- apply


def _apply(state: jax.Array, m: jax.Array, axes: Sequence[int]) -> jax.Array:
    """Apply the ``2**k`` matrix ``m`` on tensor ``axes`` of ``state``.

    ``axes[j]`` is the axis of the matrix's bit ``j`` (its first listed qubit is bit 0,
    the reference convention).
    """
    k = len(axes)
    # m as a tensor has axes (out_{k-1} … out_0, in_{k-1} … in_0).
    mt = m.reshape((2,) * (2 * k))
    in_axes = list(reversed(axes))
    out = jnp.tensordot(mt, state, axes=(list(range(k, 2 * k)), in_axes))
    return jnp.moveaxis(out, list(range(k)), in_axes)


def _block_matrix(
    qubits: tuple[int, ...], gates: list[_Gate], params: jax.Array, dtype: jnp.dtype
) -> jax.Array:
    """The block's dense matrix, with ``qubits[j]`` as bit ``j`` of its index."""
    m = len(qubits)
    local = {q: m - 1 - j for j, q in enumerate(qubits)}  # axis of qubit q in U
    u = jnp.eye(1 << m, dtype=dtype).reshape((2,) * m + (1 << m,))
    for g in gates:
        k = GATES[g.name].num_params
        p = [params[g.offset + i] for i in range(k)]
        u = _apply(u, jax_matrix(g.name, p, dtype), [local[q] for q in g.qubits])
    return u.reshape(1 << m, 1 << m)


def build_circuit_fn(
    structure: Structure, dtype: str, max_fused: int = DEFAULT_FUSED_QUBITS
) -> Callable[[jax.Array], jax.Array]:
    """The (unjitted) function ``angles -> flat state vector`` of one structure."""
    n, _ = structure
    blocks = _plan(structure, min(max_fused, n))
    cdt = jnp.dtype(dtype)
    patterns = [
        block_pattern(qubits, [(g.name, g.qubits) for g in gates]) for qubits, gates in blocks
    ]

    def fn(params: jax.Array) -> jax.Array:
        # Without the barrier XLA constant-folds |0…0> (and the first block's slices of
        # it): seconds of compile and a 2**n constant baked into the executable.
        zeros = jax.lax.optimization_barrier(jnp.zeros((1 << n,), dtype=cdt))
        state = zeros.at[0].set(1).reshape((2,) * n)
        for (qubits, gates), pattern in zip(blocks, patterns, strict=True):
            m = _block_matrix(qubits, gates, params, cdt)
            state = apply_block(state, m, qubits, pattern)
        return state.reshape(-1)

    return fn


# ------------------------------------------------------------------------------ engine


CACHE_DIR_ENV = "QBUS_JAX_CACHE_DIR"
"""Where compiled programs persist between processes (``qbus up`` sets a default)."""

# The persistent cache evicts least recently used programs past this size.
_CACHE_MAX_BYTES = 1 << 30

_log = logging.getLogger(__name__)


def _use_compile_cache() -> None:
    """Keep compiled programs on disk in ``$QBUS_JAX_CACHE_DIR``, when it is set.

    Sandboxed jobs run the engine in a fresh child process each (JAX cannot be forked
    warm), so without it every job pays the compile again: 11.6 s for a 16-qubit
    layered circuit, against 2.5 s with the program found on disk
    (``benchmarks/jax_compile_cache.py``). JAX keeps programs whose
    compile took over a second. A directory set some other way (``jax.config`` or
    ``JAX_COMPILATION_CACHE_DIR``) is left alone.
    """
    directory = os.environ.get(CACHE_DIR_ENV)
    if not directory or jax.config.jax_compilation_cache_dir:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        _log.warning("jax compile cache disabled: cannot create %s (%s)", directory, exc)
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    try:
        import filelock  # noqa: F401 - JAX needs it to evict, and fails every read without
    except ImportError:
        _log.warning("jax compile cache in %s is unbounded: install filelock to cap it", directory)
        return
    jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)


def _has_gpu() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:  # pragma: no cover - no backend at all
        return False


def _state_width(dtype: str, gpu: bool) -> int:
    """Widest state a run holds in memory: the GPU's own on a GPU, else half the host's."""
    per_amplitude = _STATE_COPIES * np.dtype(dtype).itemsize
    if gpu:
        stats = jax.devices()[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
        if limit:
            return max(1, min(_MAX_QUBITS, int(math.log2(max(limit // per_amplitude, 1)))))
    return memory_width(per_amplitude, cap=_MAX_QUBITS)


class JaxEngine(Engine):
    """A JAX state-vector simulator with per-structure jit caching and vmapped sweeps.

    ``sample`` computes the final state of the circuit (measurements must be terminal)
    and draws counts from its distribution with ``numpy``'s ``default_rng(seed)``;
    ``statevector`` returns the final state as ``complex128``.

    Attributes:
        dtype: ``complex64`` or ``complex128`` (the precision of the computation).
        max_fused_qubits: Largest block of gates fused into one matrix.
        cache_misses: How many times a circuit function was compiled.
    """

    name = "jax"
    fork_safe = False  # XLA's thread pools do not survive a fork (docs/hypervisor.md)

    def __init__(
        self,
        dtype: str = "complex128",
        *,
        max_fused_qubits: int = DEFAULT_FUSED_QUBITS,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        """Create the engine.

        Args:
            dtype: ``complex128`` (default: verification needs fidelity to 1e-6) or
                ``complex64`` (half the memory, about twice as fast).
            max_fused_qubits: Fuse gates into blocks of at most this many qubits; 1
                applies every gate on its own.
            cache_size: Compiled structures kept (least recently used go first).

        Raises:
            ValueError: For an unknown dtype or a non-positive block size.
        """
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if max_fused_qubits < 1:
            raise ValueError(f"max_fused_qubits must be at least 1, got {max_fused_qubits}")
        _use_compile_cache()
        if dtype == "complex128":
            # Process-global: it only widens JAX's defaults; complex64 engines in the same
            # process still pass their dtype explicitly everywhere.
            jax.config.update("jax_enable_x64", True)
        self.dtype = dtype
        self._real = np.float64 if dtype == "complex128" else np.float32
        self.max_fused_qubits = max_fused_qubits
        self.cache_misses = 0
        self._cache: OrderedDict[tuple, Callable] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        gpu = _has_gpu()
        width = _state_width(dtype, gpu)
        # Dense propagators for 'dynamics' (qbus/engines/jax_dynamics.py); open systems: 5.
        self.capabilities = Capabilities.state_vector(
            width,
            {"dynamics": MAX_CLOSED_QUBITS},
            batching=True,
            device="gpu" if gpu else "cpu",
        )

    @property
    def version(self) -> str:
        """The installed jax version."""
        return str(jax.__version__)

    def _check(self, request: RunRequest) -> None:
        """A ``dynamics`` request's spec (measurements are terminal: the base checks it).

        Raises:
            EngineError: From ``check_dynamics_request``.
        """
        if request.method == "dynamics":
            check_dynamics_request(request)

    # -- compilation

    def _compiled(self, structure: Structure, batched: bool) -> Callable[[jax.Array], jax.Array]:
        def build() -> Callable[[jax.Array], jax.Array]:
            fused = min(self.max_fused_qubits, SWEEP_FUSED_QUBITS) if batched else None
            body = build_circuit_fn(structure, self.dtype, fused or self.max_fused_qubits)
            return jax.jit(highest_precision(jax.vmap(body) if batched else body))

        return self._cached((structure, batched), build)

    def _angles(self, circuit: Circuit, values: Mapping[str, float] | None) -> np.ndarray:
        flat: list[float] = []
        for op in circuit.ops:
            if op.params and op.name not in _SKIP:
                flat.extend(numeric_params(op.params, values))
        return np.asarray(flat, dtype=self._real)

    def _sweep_angles(
        self, circuit: Circuit, parameter_sets: Sequence[Mapping[str, float]]
    ) -> np.ndarray:
        """The ``(points, angles)`` matrix; bare names and numbers skip the evaluator."""
        slots = [p for op in circuit.ops if op.name not in _SKIP for p in op.params]
        names = list(circuit.parameters)
        if not all(isinstance(p, float | int) or p in names for p in slots):
            return np.stack([self._angles(circuit, v) for v in parameter_sets])
        column = {name: i for i, name in enumerate(names)}
        table = np.array([[v[name] for name in names] for v in parameter_sets], dtype=self._real)
        out = np.empty((len(parameter_sets), len(slots)), dtype=self._real)
        for j, p in enumerate(slots):
            out[:, j] = table[:, column[p]] if isinstance(p, str) else float(p)
        return out

    def statevector(
        self, circuit: Circuit, values: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """The final state of ``circuit`` (measurements skipped), as ``complex128``.

        No validation: ``run`` validates first.
        """
        fn = self._compiled(structure_of(circuit), batched=False)
        out = fn(jnp.asarray(self._angles(circuit, values)))
        return np.asarray(out, dtype=np.complex128)

    def sweep(
        self,
        circuit: Circuit,
        parameter_sets: Sequence[Mapping[str, float]],
        *,
        probabilities: bool = False,
    ) -> np.ndarray:
        """Run ``circuit`` for every parameter set in one vmapped call.

        Args:
            circuit: A circuit with named parameters (measurements are skipped).
            parameter_sets: One mapping of parameter values per point.
            probabilities: Return ``|amplitude|**2`` instead of amplitudes.

        Returns:
            ``(len(parameter_sets), 2**n)`` complex128 state vectors, or float64
            probabilities.

        Raises:
            CircuitError: ``unbound_parameter`` when a set lacks a parameter.
            EngineError: ``mid_circuit_measurement`` for non-terminal measurements.
        """
        for values in parameter_sets:
            self.validate(
                RunRequest(circuit=circuit, method="statevector", parameters=dict(values))
            )
        if not parameter_sets:
            return np.zeros((0, 1 << circuit.num_qubits), dtype=np.complex128)
        angles = self._sweep_angles(circuit, parameter_sets)
        fn = self._compiled(structure_of(circuit), batched=True)
        states = fn(jnp.asarray(angles))
        if probabilities:
            return np.asarray(jnp.abs(states) ** 2, dtype=np.float64)
        return np.asarray(states, dtype=np.complex128)

    def run_sweep(self, request: RunRequest) -> EngineResult:
        """Run every point of a sweep through the batched sweep kernel (``jax_sweep``).

        With observables the expectation values are computed inside the compiled
        function; otherwise each point's counts are drawn from its state exactly as
        ``run`` draws them, with the point's seed.
        """
        start = time.perf_counter()
        circuit = request.circuit
        sets = point_parameters(request.parameters, request.sweep)
        angles = slot_table(circuit, sets).astype(self._real)
        points: list[SweepPoint] = []
        for lo, out in self._sweep_calls(circuit, angles, request.observables):
            if request.observables:
                points.extend(SweepPoint(expectations=row.tolist()) for row in out)
            else:
                for j, psi in enumerate(out):
                    seed = point_seed(request.seed, lo + j)
                    points.append(SweepPoint(counts=_sample(circuit, psi, request.shots, seed)))
        return EngineResult.timed(request, start, sweep_results=points)

    def _sweep_calls(
        self, circuit: Circuit, angles: np.ndarray, observables: Sequence[Observable]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first point, results)`` per call of the compiled sweep function.

        Results are ``complex128`` states, or ``float64`` expectation values with
        observables. A call takes ``chunk`` times 1, 2, 4 or 8 points (the last call is
        padded), so a structure compiles at most four times whatever the sweep's size,
        and a call holds at most ``_SWEEP_AMPLITUDES`` amplitudes of states.
        """
        n = circuit.num_qubits
        total = angles.shape[0]
        chunk = chunk_size(n, self.dtype, total, self.capabilities.device)
        per_call = max(1, min(8, _SWEEP_AMPLITUDES // (chunk << n)))
        chunks = min(per_call, 1 << max(0, math.ceil(math.log2(math.ceil(total / chunk)))))
        size = chunk * chunks
        key = (
            "sweep",
            structure_of(circuit),
            msgspec.json.encode(list(observables)),
            chunk,
        )
        fn = self._cached(
            key,
            lambda: jax.jit(
                highest_precision(build_sweep_fn(key[1], self.dtype, observables, chunk))
            ),
        )
        out_dtype = np.float64 if observables else np.complex128
        for lo in range(0, total, size):
            part = angles[lo : lo + size]
            real = part.shape[0]
            if real < size:
                part = np.concatenate([part, np.repeat(part[-1:], size - real, axis=0)])
            yield lo, np.asarray(fn(jnp.asarray(part)), dtype=out_dtype)[:real]

    def _cached(self, key: tuple, build: Callable[[], Callable]) -> Callable:
        with self._lock:
            fn = self._cache.get(key)
            if fn is not None:
                self._cache.move_to_end(key)
                return fn
            self.cache_misses += 1
            fn = build()
            self._cache[key] = fn
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return fn

    def _run(self, request: RunRequest) -> EngineResult:
        if request.method == "dynamics":
            psi0 = self.statevector(request.circuit, request.parameters)
            return run_dynamics(request, psi0)
        start = time.perf_counter()
        psi = self.statevector(request.circuit, request.parameters)
        return state_result(request, psi, start, _sample)


def _sample(circuit: Circuit, psi: np.ndarray, shots: int, seed: int) -> dict[str, int]:
    """Counts over clbit bitstrings, marginalised to the measured qubits."""
    n, m = circuit.num_qubits, circuit.num_clbits
    source = clbit_sources(circuit)
    kept = sorted(set(source.values()))
    probs = (psi.real**2 + psi.imag**2).reshape((2,) * n)
    drop = tuple(n - 1 - q for q in range(n) if q not in set(kept))
    marginal = probs.sum(axis=drop).reshape(-1) if drop else probs.reshape(-1)
    marginal = marginal / marginal.sum()
    draws = np.random.default_rng(seed).multinomial(shots, marginal)
    idx = np.flatnonzero(draws)
    pos = {q: j for j, q in enumerate(kept)}  # kept[j] is bit j of the marginal index
    fmt = f"0{m}b"
    counts: dict[str, int] = {}
    for i in idx:
        key = 0
        for c, q in source.items():
            key |= ((int(i) >> pos[q]) & 1) << c
        counts[format(key, fmt)] = int(draws[i])
    return counts


__all__ = ["DTYPES", "JaxEngine", "build_circuit_fn", "structure_of"]
