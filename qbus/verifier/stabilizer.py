"""Wide Clifford results against stim: an exact reference past the state vector.

The state-vector reference stops at ``max_reference_qubits``. A Clifford circuit (only
``h s sdg sx sxdg x y z id cx cy cz swap``) prepares a stabilizer state, which stim's
tableau simulator holds exactly in O(n²) bits at any width, so a 50-qubit result of the
tensor-network engine is still checked exactly:

* **counts**: measuring a stabilizer state in the Z basis gives outcomes uniform over an
  affine subspace ``x0 + span(g_1..g_k)`` of the measured bits. stim yields ``x0`` and
  the generators (measure the qubits in order; a qubit whose value is not determined by
  the earlier ones is *free*: post-select it to 0 for ``x0``, to 1 alone for its
  generator). The check is then (1) **support**: every observed outcome lies in the
  subspace (read its free bits, rebuild the rest; one outcome outside fails at once,
  as an impossible outcome does in the chi-square test), and (2) **uniformity**: the
  free bits are uniform, so the counts projected on the first ``j`` free bits go to
  the chi-square test against the uniform distribution on ``2**j`` outcomes, ``j`` as
  large as keeps five expected shots per outcome (at most 12). For GHZ: ``k = 1``, the
  support is {all 0, all 1}, and the test is the chi-square of ~1/2 each.
* **expectation values**: ``<P>`` of a Pauli string on a stabilizer state is exactly
  +1, -1 or 0 (stim's ``peek_observable_expectation``); the job's sums go to the usual
  expectation check.

stim comes with the ``tn`` extra; without it such results stay ``skipped``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from qbus.schemas.events import ExecutionCompleted, Observable, Verification
from qbus.schemas.ir import Circuit, has_control_flow
from qbus.schemas.noise import is_noisy
from qbus.verifier.expectations import check_expectations
from qbus.verifier.statistics import check_counts

try:
    import stim
except ImportError:  # pragma: no cover - exercised only without the tn extra
    stim = None

# IR gate -> stim TableauSimulator method; "id" does nothing. Global phases (which stim
# does not track) change neither outcome probabilities nor expectation values.
_CLIFFORD: dict[str, str | None] = {
    "id": None,
    "x": "x",
    "y": "y",
    "z": "z",
    "h": "h",
    "s": "s",
    "sdg": "s_dag",
    "sx": "sqrt_x",
    "sxdg": "sqrt_x_dag",
    "cx": "cx",
    "cy": "cy",
    "cz": "cz",
    "swap": "swap",
}
_DIRECTIVES = frozenset({"measure", "barrier"})
MAX_UNIFORM_BITS = 12
"""Most free bits the uniformity test looks at jointly (2**12 outcomes)."""
_MIN_EXPECTED = 5


def available() -> bool:
    """Whether stim is installed."""
    return stim is not None


def is_clifford(circuit: Circuit) -> bool:
    """Whether every op is a Clifford gate, a measurement or a barrier."""
    if has_control_flow(circuit):
        return False
    return all(op.name in _CLIFFORD or op.name in _DIRECTIVES for op in circuit.ops)


def tableau(circuit: Circuit) -> Any:
    """A stim ``TableauSimulator`` holding the circuit's state before its measurements."""
    sim = stim.TableauSimulator()
    sim.set_num_qubits(circuit.num_qubits)
    for op in circuit.ops:
        method = _CLIFFORD.get(op.name)
        if method is not None:
            getattr(sim, method)(*op.qubits)
    return sim


def _sources(circuit: Circuit) -> dict[int, int]:
    """``{clbit: qubit}`` the clbit finally holds (the last measurement wins)."""
    source: dict[int, int] = {}
    for op in circuit.ops:
        if op.name == "measure":
            for q, c in zip(op.qubits, op.clbits, strict=True):
                source[c] = q
    return source


def outcome_space(circuit: Circuit) -> tuple[dict[int, int], list[int], list[dict[int, int]]]:
    """The measured qubits' outcomes as an affine subspace: ``(x0, free, generators)``.

    Returns:
        ``x0``: qubit -> bit of one possible outcome (every free qubit 0); ``free``:
        the free qubits in measurement order; ``generators``: per free qubit, qubit ->
        bit of the outcome with that free qubit 1 and the others 0, XOR ``x0``.
    """
    sim = tableau(circuit)
    qubits = sorted(set(_sources(circuit).values()))

    def walk(one: int | None) -> tuple[dict[int, int], list[int]]:
        s = sim.copy()
        bits: dict[int, int] = {}
        free: list[int] = []
        for q in qubits:
            z = s.peek_z(q)
            if z == 0:
                free.append(q)
                s.postselect_z(q, desired_value=q == one)
                bits[q] = int(q == one)
            else:
                bits[q] = int(z == -1)
        return bits, free

    x0, free = walk(None)
    generators = []
    for f in free:
        bits, _ = walk(f)
        generators.append({q: bits[q] ^ x0[q] for q in qubits})
    return x0, free, generators


def check_stabilizer_counts(
    circuit: Circuit, counts: Mapping[str, int], shots: int, alpha: float
) -> Verification:
    """Counts of a Clifford circuit against stim: support, then uniformity (module doc)."""
    x0, free, generators = outcome_space(circuit)
    source = _sources(circuit)
    m = circuit.num_clbits
    total = sum(counts.values())
    if total != shots:
        return Verification(
            verdict="fail",
            test="stabilizer",
            detail=f"counts add up to {total}, but {shots} shots were requested",
        )
    j = min(len(free), MAX_UNIFORM_BITS, max(0, int(math.log2(max(shots, 1) / _MIN_EXPECTED))))
    projected: dict[str, int] = {}
    for key, n in counts.items():
        bits = {q: int(key[m - 1 - c]) for c, q in source.items()}
        want = dict(x0)
        for f, g in zip(free, generators, strict=True):
            if bits[f]:
                want = {q: b ^ g[q] for q, b in want.items()}
        wrong = sorted(q for q in want if want[q] != bits[q])
        if wrong:
            return Verification(
                verdict="fail",
                test="stabilizer",
                detail=f"observed outcome '{key}' ({n} time(s)) is impossible for the "
                f"exact stabilizer state (stim): qubit {wrong[0]} contradicts the others",
            )
        sub = "".join(str(bits[f]) for f in reversed(free[:j]))
        projected[sub] = projected.get(sub, 0) + n
    uniform = {format(i, f"0{j}b") if j else "": 1 / 2**j for i in range(2**j)}
    test = check_counts(projected, uniform, shots, alpha=alpha)
    return Verification(
        verdict=test.verdict,
        test="stabilizer",
        statistic=test.statistic,
        p_value=test.p_value,
        threshold=test.threshold,
        detail=f"stim: every outcome in the {len(free)}-dimensional affine outcome space "
        f"of the {len(x0)} measured qubits; uniformity of {j} free bit(s): {test.detail}",
    )


def check_stabilizer_expectations(
    circuit: Circuit, got: list[float], observables: list[Observable]
) -> Verification:
    """Expectation values of a Clifford circuit against stim's exact ones."""
    sim = tableau(circuit)
    n = circuit.num_qubits
    exact = []
    for obs in observables:
        value = 0.0
        for term in obs.terms:
            letters = ["_"] * n
            for letter, q in term.factors():
                letters[q] = letter
            value += term.coeff * float(
                sim.peek_observable_expectation(stim.PauliString("".join(letters)))
            )
        exact.append(value)
    result = check_expectations(got, exact, observables)
    return Verification(
        verdict=result.verdict,
        test="stabilizer",
        statistic=result.statistic,
        threshold=result.threshold,
        detail=f"stim: {result.detail}",
    )


def verify_wide(event: ExecutionCompleted, alpha: float) -> Verification | None:
    """The stim check of a result too wide for the state-vector reference, or None.

    None (the caller then reports ``skipped``) unless stim is installed and the job is a
    noiseless ``sample`` or ``expectation`` of a Clifford circuit.
    """
    circuit, options = event.circuit, event.options
    if stim is None or is_noisy(options.noise) or not is_clifford(circuit):
        return None
    if options.method == "sample" and event.counts is not None:
        return check_stabilizer_counts(circuit, event.counts, options.shots, alpha)
    if options.method == "expectation":
        return check_stabilizer_expectations(circuit, event.expectations or [], options.observables)
    return None


__all__ = [
    "available",
    "check_stabilizer_counts",
    "check_stabilizer_expectations",
    "is_clifford",
    "outcome_space",
    "tableau",
    "verify_wide",
]
