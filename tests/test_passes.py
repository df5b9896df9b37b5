"""Rewrite passes: exact outputs on hand cases, and equivalence on random circuits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qbus.engines.reference import statevector
from qbus.passes import cancel_inverses, drop_identities, is_identity, merge_rotations, optimize
from qbus.schemas.events import PassReport
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op

PI = math.pi


def g(name: str, *qubits: int, params: tuple = ()) -> Op:
    return Op(name=name, qubits=qubits, params=params)


def measure(q: int, c: int) -> Op:
    return Op(name="measure", qubits=(q,), clbits=(c,))


def circ(*ops: Op, n: int = 3, clbits: int = 0) -> Circuit:
    return Circuit(num_qubits=n, num_clbits=clbits, ops=ops)


# --- cancel_inverses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ops",
    [
        (g("h", 0), g("h", 0)),
        (g("x", 1), g("x", 1)),
        (g("cx", 0, 1), g("cx", 0, 1)),
        (g("cz", 0, 1), g("cz", 1, 0)),
        (g("swap", 0, 2), g("swap", 2, 0)),
        (g("s", 0), g("sdg", 0)),
        (g("sdg", 0), g("s", 0)),
        (g("t", 2), g("tdg", 2)),
        (g("sx", 0), g("sxdg", 0)),
        (g("ccx", 0, 1, 2), g("ccx", 1, 0, 2)),
        (g("cswap", 0, 1, 2), g("cswap", 0, 2, 1)),
        (g("cy", 2, 0), g("cy", 2, 0)),
        (g("ch", 0, 1), g("ch", 0, 1)),
    ],
)
def test_cancel_inverse_pairs(ops: tuple[Op, ...]) -> None:
    out, report = cancel_inverses(circ(*ops))
    assert out.ops == ()
    assert report == PassReport(name="cancel_inverses", removed=2)


@pytest.mark.parametrize(
    "ops",
    [
        (g("cx", 0, 1), g("cx", 1, 0)),  # control and target swapped: not inverse
        (g("ccx", 0, 1, 2), g("ccx", 0, 2, 1)),  # target changed
        (g("cswap", 0, 1, 2), g("cswap", 1, 0, 2)),  # control changed
        (g("s", 0), g("s", 0)),
        (g("h", 0), g("h", 1)),
        (g("h", 0), measure(0, 0), g("h", 0)),
        (g("h", 0), Op(name="reset", qubits=(0,)), g("h", 0)),
        (g("h", 0), Op(name="barrier", qubits=(0, 1)), g("h", 0)),
        (g("h", 0), Op(name="barrier", qubits=()), g("h", 0)),  # empty barrier = all
        (g("cx", 0, 1), g("h", 1), g("cx", 0, 1)),
        (g("cx", 0, 1), g("z", 0), g("cx", 0, 1)),  # commutes, but no commutation here
        (g("cx", 0, 1), g("cx", 0, 2), g("cx", 0, 1)),
    ],
)
def test_blocked_or_not_inverse_pairs_stay(ops: tuple[Op, ...]) -> None:
    circuit = circ(*ops, clbits=1)
    out, report = cancel_inverses(circuit)
    assert out == circuit
    assert report.removed == 0


def test_cancel_ignores_ops_on_other_qubits() -> None:
    out, report = cancel_inverses(circ(g("h", 0), g("x", 1), g("cz", 1, 2), g("h", 0)))
    assert out.ops == (g("x", 1), g("cz", 1, 2))
    assert report.removed == 2


def test_cancel_collapses_nested_chains_in_one_sweep() -> None:
    ops = (g("h", 0), g("cx", 0, 1), g("s", 1), g("sdg", 1), g("cx", 0, 1), g("h", 0))
    out, report = cancel_inverses(circ(*ops))
    assert out.ops == ()
    assert report.removed == 6


def test_cancel_odd_run_keeps_one() -> None:
    out, report = cancel_inverses(circ(g("x", 0), g("x", 0), g("x", 0)))
    assert out.ops == (g("x", 0),)
    assert report.removed == 2


# --- merge_rotations ----------------------------------------------------------------


def test_merge_adds_angles() -> None:
    out, report = merge_rotations(
        circ(g("rx", 0, params=(0.25,)), g("rx", 0, params=(0.5,)), g("rx", 0, params=(1.0,)))
    )
    assert out.ops == (g("rx", 0, params=(1.75,)),)
    assert report == PassReport(name="merge_rotations", removed=2, merged=2)


@pytest.mark.parametrize("name", ["cp", "rzz", "rxx", "ryy"])
def test_merge_symmetric_two_qubit_rotations_in_either_order(name: str) -> None:
    out, _ = merge_rotations(circ(g(name, 0, 1, params=(0.5,)), g(name, 1, 0, params=(0.25,))))
    assert out.ops == (g(name, 0, 1, params=(0.75,)),)


@pytest.mark.parametrize("name", ["crx", "cry", "crz"])
def test_controlled_rotations_need_the_same_control(name: str) -> None:
    same = circ(g(name, 0, 1, params=(0.5,)), g(name, 0, 1, params=(0.25,)))
    assert merge_rotations(same)[0].ops == (g(name, 0, 1, params=(0.75,)),)
    swapped = circ(g(name, 0, 1, params=(0.5,)), g(name, 1, 0, params=(0.25,)))
    assert merge_rotations(swapped)[0] == swapped


def test_merge_needs_same_kind_and_adjacency() -> None:
    circuit = circ(
        g("rx", 0, params=(0.5,)),
        g("ry", 0, params=(0.5,)),
        g("rz", 1, params=(0.5,)),
        g("cx", 1, 2),
        g("rz", 1, params=(0.5,)),
        g("p", 2, params=(0.1,)),
        g("u1", 2, params=(0.1,)),  # the same matrix, another name: left alone
    )
    assert merge_rotations(circuit)[0] == circuit


def test_merge_skips_symbolic_angles() -> None:
    circuit = Circuit(
        num_qubits=1,
        ops=(g("rz", 0, params=("theta",)), g("rz", 0, params=(0.5,))),
        parameters=("theta",),
    )
    out, report = merge_rotations(circuit)
    assert out == circuit
    assert report.merged == 0


# --- drop_identities ----------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        g("id", 0),
        g("rz", 0, params=(4 * PI,)),
        g("rx", 0, params=(-8 * PI,)),
        g("ry", 0, params=(0.0,)),
        g("rx", 0, params=(1e-13,)),
        g("crx", 0, 1, params=(4 * PI,)),
        g("rzz", 0, 1, params=(4 * PI,)),
        g("p", 0, params=(2 * PI,)),
        g("u1", 0, params=(-2 * PI,)),
        g("cp", 0, 1, params=(6 * PI,)),
        g("u", 0, params=(0.0, 0.5, -0.5)),
        g("cu", 0, 1, params=(4 * PI, 1.0, -1.0, 2 * PI)),
    ],
)
def test_identities_are_dropped(op: Op) -> None:
    assert is_identity(op)
    out, report = drop_identities(circ(g("h", 2), op))
    assert out.ops == (g("h", 2),)
    assert report == PassReport(name="drop_identities", removed=1)


@pytest.mark.parametrize(
    "op",
    [
        g("rz", 0, params=(2 * PI,)),  # -I: a global phase, kept so the state stays exact
        g("crz", 0, 1, params=(2 * PI,)),  # controlled: diag(1, -1) on the control
        g("cry", 0, 1, params=(2 * PI,)),
        g("rx", 0, params=(1e-9,)),
        g("p", 0, params=(PI,)),
        g("u", 0, params=(2 * PI, 0.0, 0.0)),
        g("u", 0, params=(0.0, 0.5, 0.5)),
        g("cu", 0, 1, params=(0.0, 0.0, 0.0, PI)),
        g("h", 0),
        measure(0, 0),
    ],
)
def test_non_identities_stay(op: Op) -> None:
    assert not is_identity(op)
    circuit = circ(op, clbits=1)
    assert drop_identities(circuit) == (circuit, PassReport(name="drop_identities", removed=0))


def test_dropped_identities_are_really_identity() -> None:
    for op in (g("crx", 0, 1, params=(4 * PI,)), g("cu", 0, 1, params=(4 * PI, 1.0, -1.0, 0.0))):
        sv = statevector(circ(g("h", 0), g("h", 1), op, n=2))
        np.testing.assert_allclose(sv, np.full(4, 0.5), atol=1e-12)


# --- optimize -----------------------------------------------------------------------


def test_optimize_reaches_a_fixpoint_with_totals() -> None:
    ops = (
        g("h", 0),
        g("rx", 0, params=(0.3,)),
        g("rx", 0, params=(-0.3,)),
        g("h", 0),
        g("cx", 1, 2),
        g("id", 1),
        g("cx", 1, 2),
        g("t", 2),
    )
    out, reports = optimize(circ(*ops))
    assert out.ops == (g("t", 2),)
    assert reports == [
        PassReport(name="cancel_inverses", removed=4),
        PassReport(name="merge_rotations", removed=1, merged=1),
        PassReport(name="drop_identities", removed=2),
    ]


def test_optimize_leaves_an_optimal_circuit_alone() -> None:
    circuit = circ(g("h", 0), g("cx", 0, 1), measure(0, 0), measure(1, 1), clbits=2)
    out, reports = optimize(circuit)
    assert out is circuit
    assert [r.removed for r in reports] == [0, 0, 0]


def _random_redundant_circuit(rng: np.random.Generator) -> Circuit:
    """Random gates with many inverse pairs, repeated rotations and identity angles."""
    n = int(rng.integers(1, 6))
    names = [name for name in GATES if GATES[name].num_qubits <= n]
    ops: list[Op] = []
    for _ in range(int(rng.integers(0, 40))):
        roll = rng.random()
        if ops and roll < 0.25 and ops[-1].name in GATES:
            prev = ops[-1]
            spec = GATES[prev.name]
            if spec.rotation:
                angle = float(rng.choice([-prev.params[0], 2 * PI, 4 * PI, 0.1]))  # type: ignore[operator]
                ops.append(Op(name=prev.name, qubits=prev.qubits[::-1], params=(angle,)))
            else:
                name = spec.inverse or prev.name
                ops.append(Op(name=name, qubits=prev.qubits, params=prev.params))
            continue
        if roll < 0.3:
            ops.append(Op(name="barrier", qubits=(int(rng.integers(n)),)))
            continue
        name = names[int(rng.integers(len(names)))]
        spec = GATES[name]
        qubits = tuple(int(q) for q in rng.permutation(n)[: spec.num_qubits])
        choices = [0.0, PI, 2 * PI, 4 * PI, float(rng.uniform(-7, 7))]
        params = tuple(float(rng.choice(choices)) for _ in range(spec.num_params))
        ops.append(Op(name=name, qubits=qubits, params=params))
    return Circuit(num_qubits=n, ops=tuple(ops))


def test_optimize_preserves_the_state_of_random_circuits() -> None:
    rng = np.random.default_rng(2024)
    removed_total = 0
    for _ in range(200):
        circuit = _random_redundant_circuit(rng)
        out, reports = optimize(circuit)
        assert len(out.ops) <= len(circuit.ops)
        removed = sum(r.removed for r in reports)
        assert len(circuit.ops) - len(out.ops) == removed
        removed_total += removed
        before, after = statevector(circuit), statevector(out)
        fidelity = abs(np.vdot(before, after)) ** 2
        assert fidelity == pytest.approx(1.0, abs=1e-9)
        # The passes are exact, global phase included.
        np.testing.assert_allclose(after, before, atol=1e-9)
        # A fixpoint: running again changes nothing.
        again, _ = optimize(out)
        assert again == out
    assert removed_total > 200  # the generator does give the passes work


def test_optimize_handles_long_circuits() -> None:
    # h x h x ... on one qubit never cancels; alternating pairs on qubit 1 all do.
    def build(k: int) -> Circuit:
        ops = []
        for i in range(k):
            ops.append(g("h" if i % 2 else "x", 0))
            ops.append(g("rz", 1, params=(0.1,)))
            ops.append(g("cx", 1, 2))
            ops.append(g("cx", 1, 2))
        return circ(*ops)

    out, reports = optimize(build(50_000))
    assert len(out.ops) == 50_001  # the x/h chain and one merged rz
    assert {r.name: r.removed for r in reports}["cancel_inverses"] == 100_000
