"""The ``quimb-tn`` engine: wide, shallow circuits as tensor networks (quimb + cotengra).

A state vector of n qubits takes 16·2^n bytes; a tensor network of a shallow circuit
takes memory that grows with the circuit's *treewidth*, not its width, so a 50-qubit
GHZ state or a few layers of a 40-qubit brickwork circuit contract in milliseconds.
quimb and cotengra (``pip install 'qbus[tn]'``) are imported here only.

What it runs (terminal measurements, noiseless):

* ``sample``: quimb's exact marginal-chain sampling (``Circuit.sample``): the measured
  qubits in groups of ``GROUP_SIZE``, each group's marginal computed conditioned on the
  bits drawn before it, from the reverse light cone of the group only, with a generator
  seeded from the request (the same seed gives the same counts);
* ``expectation``: each Pauli term ``<psi|P|psi>`` as one contraction of the term's
  reverse light cone, its bra and ket (gates outside the light cone cancel), so the
  observables are evaluated here, not on a state vector;
* ``statevector``: the whole network contracted to a dense vector, up to
  ``STATEVECTOR_QUBITS`` (for the conformance suite and small jobs).

Every gate is the reference's matrix (``qbus.engines.reference.gate_matrix``, big-endian
for quimb), so the mapping is exact including global phase; every IR gate maps.

**Cost bound.** Before anything is contracted, ``_check`` finds the contraction trees
(cotengra, greedy with random restarts, at most ``SEARCH_SECONDS`` per network) with
*slicing* so that no intermediate tensor exceeds the job's memory (``RunRequest.memory_mb``,
else ``DEFAULT_MEMORY_MB``) divided by ``WORKING_COPIES``, and refuses the run with
``contraction_too_costly`` when the predicted work exceeds ``max_flops`` or
``max_contractions``: the message states the predicted flops, contractions and largest
intermediate. The router asks the same question before it sends a job here
(``qbus/router/capability.py``). Trees are cached per network structure by the
process's optimisers, so a search is done once per structure (the run searches with
the slicing optimiser, which the prediction used only where the tree did not fit).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version as _dist_version
from typing import Any

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.kernels import big_endian_matrix
from qbus.engines.params import numeric_params
from qbus.engines.reference import clbit_sources, gate_matrix
from qbus.errors import EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable

try:
    import cotengra as ctg
    import quimb.tensor as qtn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("quimb", "tn", "the quimb-tn engine") from exc

MAX_QUBITS = 100
"""Widest circuit accepted; the cost bound, not the width, decides what runs."""
STATEVECTOR_QUBITS = 20
"""Widest dense state returned (the state-vector engines serve wider ones)."""
GROUP_SIZE = 12
"""Qubits per marginal when sampling: larger groups mean fewer, bigger contractions
(a marginal of 12 qubits is 4096 numbers)."""
DEFAULT_MEMORY_MB = 4096
"""Memory assumed for a request that names none (the hypervisor's default per run)."""
WORKING_COPIES = 8
"""The largest intermediate may take this share of the memory: the operands of a
pairwise contraction, its result and cotengra's scratch live at once."""
MAX_FLOPS = 1e11
"""Default bound on a run's predicted work (about a minute or two of one CPU core)."""
MAX_CONTRACTIONS = 10_000
"""Default bound on a run's contractions: each costs milliseconds of Python overhead
(simplifying and slicing its network) however few its flops, 10-25 ms for a 30-qubit
sampling marginal on the 2-core VM: sampling needs up to one per shot and group."""
SEARCH_SECONDS = 1.0
"""Time the path search may take per network."""
_BYTES = 16  # complex128
_DTYPE = "complex128"
_PAULI = {
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}
_SKIP = frozenset({"measure", "barrier", "id", "reset"})
# cotengra's optimisers hold a cache of trees; one per slicing target (0: unsliced),
# shared by the process, so a network structure is searched once. Searches are
# serialised.
_optimizers: dict[int, Any] = {}
_lock = threading.RLock()


@dataclass(frozen=True, slots=True)
class ContractionCost:
    """A run's predicted cost.

    Attributes:
        flops: Floating-point operations of every contraction the run performs (an
            upper bound for sampling: every conditional marginal computed afresh).
        peak_bytes: Largest intermediate tensor of any contraction, after slicing.
        contractions: How many contractions that counts.
        slices: Most slices any one contraction is cut into to fit the memory.
        partial: The prediction stopped once it passed the limit: the run costs at
            least this much.
    """

    flops: float
    peak_bytes: int
    contractions: int
    slices: int
    partial: bool = False

    def describe(self) -> str:
        """The cost in words: flops, largest intermediate, slicing."""
        return (
            f"{'at least' if self.partial else 'about'} {self.flops:.2e} flops in "
            f"{self.contractions:,} contraction(s), "
            f"largest intermediate {self.peak_bytes / 2**20:,.1f} MiB"
            + (f" after slicing into {self.slices:.3g} slices" if self.slices > 1 else "")
        )


def target_size(memory_mb: int | None) -> int:
    """Largest intermediate, in amplitudes, that a run with ``memory_mb`` may hold."""
    memory = (memory_mb if memory_mb and memory_mb > 0 else DEFAULT_MEMORY_MB) * 2**20
    # A power of two: cotengra compares sizes of products of dimension-2 indices.
    return 2 ** max(4, int(math.log2(memory // _BYTES // WORKING_COPIES)))


def optimizer(target: int | None) -> Any:
    """The process's path optimiser for intermediates of at most ``target`` amplitudes
    (None: no slicing)."""
    key = target or 0
    with _lock:
        opt = _optimizers.get(key)
        if opt is None:
            opt = ctg.ReusableHyperOptimizer(
                methods=("greedy",),
                optlib="random",  # no optuna/nevergrad needed (and no warning)
                max_repeats=16,
                max_time=SEARCH_SECONDS,
                slicing_opts={"target_size": target} if target else None,
                progbar=False,
                parallel=False,  # in the calling thread: no pool in a sandboxed child
            )
            _optimizers[key] = opt
        return opt


def to_quimb(circuit: Circuit, values: dict[str, float]) -> Any:
    """The circuit's gates as a ``quimb.tensor.Circuit`` (measurements dropped).

    Resets are on fresh qubits (terminal measurements were checked), so no-ops.
    """
    qc = qtn.Circuit(circuit.num_qubits, dtype=_DTYPE)
    for op in circuit.ops:
        if op.name in _SKIP:
            continue
        m = gate_matrix(op.name, numeric_params(op.params, values))
        qc.apply_gate_raw(big_endian_matrix(m), op.qubits)
    return qc


def measured_qubits(circuit: Circuit) -> list[int]:
    """The qubits whose values end in a clbit, ascending."""
    return sorted(set(clbit_sources(circuit).values()))


def _tree_cost(tree: Any) -> tuple[float, int, int]:
    """(flops, peak bytes, slices) of one cotengra contraction tree."""
    flops = float(tree.contraction_cost())
    peak = int(2 ** float(tree.contraction_width())) * _BYTES
    return flops, peak, int(tree.nslices)


def _term_network(qc: Any, factors: list[tuple[str, int]]) -> Any:
    """``<psi| P |psi>`` of one Pauli string as a closed network, simplified.

    Only the reverse light cone of the string's qubits is kept: every gate outside it
    meets its own adjoint and cancels.
    """
    where = tuple(q for _, q in factors)
    psi = qc.get_psi_reverse_lightcone(where)
    ket = psi.copy()
    for letter, q in factors:
        ket.gate_(_PAULI[letter], q, contract=True)
    ket.mangle_inner_()  # the bra keeps psi's bond names: the ket's must differ
    tn = psi.H & ket
    tn.full_simplify_("ADCRS", output_inds=())
    return tn


class TensorNetworkEngine(Engine):
    """quimb's exact tensor-network circuit simulator, contraction paths by cotengra.

    Attributes:
        max_flops: Largest predicted work a run may take (``contraction_too_costly``).
        max_contractions: Most contractions a run may take (``contraction_too_costly``).
    """

    name = "quimb-tn"
    capabilities = Capabilities(
        methods=("sample", "expectation", "statevector"),
        max_qubits={
            "sample": MAX_QUBITS,
            "expectation": MAX_QUBITS,
            "statevector": STATEVECTOR_QUBITS,
        },
        holds_state=False,
    )
    max_flops: float = MAX_FLOPS
    max_contractions: int = MAX_CONTRACTIONS

    @property
    def version(self) -> str:
        """The installed quimb version."""
        return _dist_version("quimb")

    # -- the cost bound ----------------------------------------------------------------

    def predict(self, request: RunRequest) -> ContractionCost:
        """The predicted cost of running ``request`` (searches the contraction trees).

        Stops at the first network that takes the total past ``max_flops`` (the cost
        is then ``partial``: at least that much).
        """
        target = target_size(request.memory_mb)
        opt, free = optimizer(target), optimizer(None)
        qc = to_quimb(request.circuit, request.parameters)
        costs: list[tuple[float, int, int]] = []
        count = 0
        partial = False
        with _lock:
            if request.method == "sample":
                # quimb's sample_rehearse, group by group, so that a hopeless circuit
                # is refused after its first marginal, not after all of them.
                _, order = qc._parse_qubits_order(measured_qubits(request.circuit), None)
                fix: dict[int, str] = {}
                for where in qc._group_order(order, GROUP_SIZE):
                    # Unsliced first: slicing only adds flops, and finding the slices
                    # of a hopeless tree takes the slicer minutes.
                    found = qc.compute_marginal(
                        where=where, fix=fix, optimize=free, dtype=_DTYPE, rehearse=True
                    )
                    flops, peak, slices = _tree_cost(found["tree"])
                    if flops <= self.max_flops and peak > target * _BYTES:
                        found = qc.compute_marginal(
                            where=where, fix=fix, optimize=opt, dtype=_DTYPE, rehearse=True
                        )
                        flops, peak, slices = _tree_cost(found["tree"])
                    # Conditionals are cached: a group is contracted at most once per
                    # distinct value of the bits drawn before it, and once per shot.
                    times = min(request.shots, 2 ** min(len(fix), 62))
                    costs.append((flops * times, peak, slices))
                    count += times
                    fix.update({q: "0" for q in where})
                    if sum(c[0] for c in costs) > self.max_flops:
                        partial = True
                        break
            elif request.method == "expectation":
                for factors in _distinct_strings(request.observables):
                    if not factors:
                        continue
                    tn = _term_network(qc, list(factors))
                    if tn.num_tensors > 1:
                        cost = _tree_cost(tn.contraction_tree(free, output_inds=()))
                        if cost[0] <= self.max_flops and cost[1] > target * _BYTES:
                            cost = _tree_cost(tn.contraction_tree(opt, output_inds=()))
                        costs.append(cost)
                    count += 1
                    if sum(c[0] for c in costs) > self.max_flops:
                        partial = True
                        break
            else:
                n = request.circuit.num_qubits
                count = 1
                # The dense result itself: 2^n amplitudes; the network is tiny.
                costs.append((float(2**n * max(len(request.circuit.ops), 1)), 2**n * _BYTES, 1))
        return ContractionCost(
            flops=sum(c[0] for c in costs),
            peak_bytes=max((c[1] for c in costs), default=0),
            contractions=count,
            slices=max((c[2] for c in costs), default=1),
            partial=partial,
        )

    def _check(self, request: RunRequest) -> None:
        """Refuse a run predicted past ``max_flops`` or ``max_contractions``.

        Raises:
            EngineError: ``contraction_too_costly`` with the predicted cost.
        """
        cost = self.predict(request)
        if cost.flops > self.max_flops or cost.contractions > self.max_contractions:
            memory = target_size(request.memory_mb) * _BYTES * WORKING_COPIES // 2**20
            raise EngineError(
                f"engine '{self.name}': the {request.circuit.num_qubits}-qubit "
                f"'{request.method}' run is too costly to contract: predicted "
                f"{cost.describe()}; the limits are {self.max_flops:.0e} flops and "
                f"{self.max_contractions:,} contractions in {memory:,} MiB (a shallower "
                "circuit, fewer shots or more memory would lower it)",
                code="contraction_too_costly",
            )

    # -- running -----------------------------------------------------------------------

    def _run(self, request: RunRequest) -> EngineResult:
        start = time.perf_counter()
        opt = optimizer(target_size(request.memory_mb))
        circuit = request.circuit
        qc = to_quimb(circuit, request.parameters)
        with _lock:
            if request.method == "sample":
                counts = self._sample(qc, circuit, request, opt)
                return EngineResult.timed(request, start, counts=counts)
            if request.method == "expectation":
                values = self._expectations(qc, request.observables, opt)
                return EngineResult.timed(request, start, expectations=values)
            n = circuit.num_qubits
            # quimb's first index is the most significant: list qubit n-1 first so
            # that qubit 0 is the least significant bit, as the IR has it.
            dense = qc.psi.to_dense([f"k{q}" for q in reversed(range(n))], optimize=opt)
            state = np.asarray(dense, dtype=np.complex128).reshape(-1)
            return EngineResult.timed(request, start, statevector=state)

    @staticmethod
    def _sample(qc: Any, circuit: Circuit, request: RunRequest, opt: Any) -> dict[str, int]:
        qubits = measured_qubits(circuit)
        col = {q: j for j, q in enumerate(qubits)}
        source = clbit_sources(circuit)
        m = circuit.num_clbits
        counts: dict[str, int] = {}
        draws = qc.sample(
            request.shots,
            qubits=qubits,
            group_size=GROUP_SIZE,
            seed=request.seed,
            optimize=opt,
            dtype=_DTYPE,
        )
        for bits in draws:
            key = ["0"] * m
            for c, q in source.items():
                key[m - 1 - c] = bits[col[q]]
            k = "".join(key)
            counts[k] = counts.get(k, 0) + 1
        return counts

    @staticmethod
    def _expectations(qc: Any, observables: list[Observable], opt: Any) -> list[float]:
        values: dict[tuple[tuple[str, int], ...], float] = {(): 1.0}
        for factors in _distinct_strings(observables):
            if factors not in values:
                tn = _term_network(qc, list(factors))
                value = tn.contract(all, optimize=opt, output_inds=())
                values[factors] = float(np.real(complex(value)))
        return [
            float(sum(t.coeff * values[_key(t.factors())] for t in obs.terms))
            for obs in observables
        ]


def _key(factors: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(factors, key=lambda f: f[1]))


def _distinct_strings(observables: list[Observable]) -> list[tuple[tuple[str, int], ...]]:
    """The distinct Pauli strings of the observables, each once, identities included."""
    seen: dict[tuple[tuple[str, int], ...], None] = {}
    for obs in observables:
        for term in obs.terms:
            seen.setdefault(_key(term.factors()), None)
    return list(seen)


__all__ = ["ContractionCost", "TensorNetworkEngine", "optimizer", "target_size", "to_quimb"]
