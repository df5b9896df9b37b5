"""The equivalence checker on its own: 200 random circuit pairs, classified with 0 errors.

Equivalent pairs are built from known identities (HH = I, CNOT conjugations, H-conjugated
CNOT reversal, commuting gates swapped, RZ(a)RZ(b) = RZ(a+b), SWAP = 3 CNOTs, gates that
differ by a global phase). Non-equivalent pairs change exactly one gate of such a pair
(an angle, a gate's kind, its qubits, or drop it) in a way that is not a global phase, so
``A G' B ≠ e^{iφ} A G B`` by construction.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from qbus.ai.equivalence import check_equivalence, random_states_confidence
from qbus.engines.reference import statevector
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op

ONE_Q = ("x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg")
ONE_Q_ROT = ("rx", "ry", "rz", "p")
TWO_Q = ("cx", "cy", "cz", "ch", "swap", "csx")
TWO_Q_ROT = ("cp", "crx", "cry", "crz", "rxx", "ryy", "rzz")


def angle(rng: random.Random) -> float:
    # Away from 0 and 2π, so no gate is the identity up to phase by accident.
    return rng.uniform(0.3, 5.9)


def random_gate(rng: random.Random, n: int) -> Op:
    kinds = ["1", "1r", "2", "2r", "u"] + (["3"] if n >= 3 else [])
    kind = rng.choice(kinds)
    if kind in ("1", "1r", "u"):
        q = (rng.randrange(n),)
        if kind == "1":
            return Op(name=rng.choice(ONE_Q), qubits=q)
        if kind == "1r":
            return Op(name=rng.choice(ONE_Q_ROT), qubits=q, params=(angle(rng),))
        return Op(name="u", qubits=q, params=(angle(rng), angle(rng), angle(rng)))
    if kind in ("2", "2r"):
        qs = tuple(rng.sample(range(n), 2))
        if kind == "2":
            return Op(name=rng.choice(TWO_Q), qubits=qs)
        return Op(name=rng.choice(TWO_Q_ROT), qubits=qs, params=(angle(rng),))
    return Op(name=rng.choice(("ccx", "cswap")), qubits=tuple(rng.sample(range(n), 3)))


def random_circuit(rng: random.Random, n: int, gates: int) -> Circuit:
    ops = [random_gate(rng, n) for _ in range(gates)]
    # Make sure the identities below find something to work on.
    a, b = rng.sample(range(n), 2)
    ops.insert(rng.randrange(len(ops) + 1), Op(name="swap", qubits=(a, b)))
    ops.insert(rng.randrange(len(ops) + 1), Op(name="cx", qubits=(b, a)))
    ops.insert(rng.randrange(len(ops) + 1), Op(name="rz", qubits=(a,), params=(angle(rng),)))
    ops.insert(rng.randrange(len(ops) + 1), Op(name="p", qubits=(b,), params=(angle(rng),)))
    ops.append(Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n))))
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


# -- identities: each returns new ops equal to the old ones up to global phase ---------------


def _gate_positions(ops: list[Op], names: tuple[str, ...]) -> list[int]:
    return [i for i, op in enumerate(ops) if op.name in names]


def ident_hh(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    q = rng.randrange(n)
    i = rng.randrange(len(ops))  # before the final measure
    return [*ops[:i], Op(name="h", qubits=(q,)), Op(name="h", qubits=(q,)), *ops[i:]]


def ident_cnot_conjugation(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    # CX X_c CX = X_c X_t and CX Z_t CX = Z_c Z_t: each block below is the identity.
    c, t = rng.sample(range(n), 2)
    cx = Op(name="cx", qubits=(c, t))
    if rng.random() < 0.5:
        block = [
            cx,
            Op(name="x", qubits=(c,)),
            cx,
            Op(name="x", qubits=(t,)),
            Op(name="x", qubits=(c,)),
        ]
    else:
        block = [
            cx,
            Op(name="z", qubits=(t,)),
            cx,
            Op(name="z", qubits=(c,)),
            Op(name="z", qubits=(t,)),
        ]
    i = rng.randrange(len(ops))
    return [*ops[:i], *block, *ops[i:]]


def ident_reverse_cnot(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    # (H⊗H) CX(c,t) (H⊗H) = CX(t,c)
    i = rng.choice(_gate_positions(ops, ("cx",)))
    c, t = ops[i].qubits
    hs = [Op(name="h", qubits=(c,)), Op(name="h", qubits=(t,))]
    return [*ops[:i], *hs, Op(name="cx", qubits=(t, c)), *hs, *ops[i + 1 :]]


def ident_commute(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    # Neighbours on disjoint qubits commute; so do RZ on a CX's control and the CX.
    candidates = [
        i
        for i in range(len(ops) - 2)
        if not set(ops[i].qubits) & set(ops[i + 1].qubits)
        or (
            ops[i].name == "rz"
            and ops[i + 1].name == "cx"
            and ops[i].qubits[0] == ops[i + 1].qubits[0]
        )
    ]
    if not candidates:
        return ident_hh(ops, rng, n)
    i = rng.choice(candidates)
    return [*ops[:i], ops[i + 1], ops[i], *ops[i + 2 :]]


def ident_split_rotation(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    # RZ(a) RZ(b) = RZ(a + b), likewise RX, RY, P.
    i = rng.choice(_gate_positions(ops, ONE_Q_ROT))
    op = ops[i]
    a = rng.uniform(-3, 3)
    first = Op(name=op.name, qubits=op.qubits, params=(a,))
    second = Op(name=op.name, qubits=op.qubits, params=(float(op.params[0]) - a,))
    return [*ops[:i], first, second, *ops[i + 1 :]]


def ident_swap_three_cnots(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    i = rng.choice(_gate_positions(ops, ("swap",)))
    a, b = ops[i].qubits
    three = [
        Op(name="cx", qubits=(a, b)),
        Op(name="cx", qubits=(b, a)),
        Op(name="cx", qubits=(a, b)),
    ]
    return [*ops[:i], *three, *ops[i + 1 :]]


def ident_global_phase(ops: list[Op], rng: random.Random, n: int) -> list[Op]:
    # P(θ) = e^{iθ/2} RZ(θ); Y = i X Z (Z first); Z = i RZ(π).
    i = rng.choice(_gate_positions(ops, ("p", "y", "z")))
    op = ops[i]
    if op.name == "p":
        new = [Op(name="rz", qubits=op.qubits, params=op.params)]
    elif op.name == "y":
        new = [Op(name="z", qubits=op.qubits), Op(name="x", qubits=op.qubits)]
    else:
        new = [Op(name="rz", qubits=op.qubits, params=(math.pi,))]
    return [*ops[:i], *new, *ops[i + 1 :]]


IDENTITIES = (
    ident_hh,
    ident_cnot_conjugation,
    ident_reverse_cnot,
    ident_commute,
    ident_split_rotation,
    ident_swap_three_cnots,
    ident_global_phase,
)


def equivalent_variant(c: Circuit, rng: random.Random) -> Circuit:
    ops = list(c.ops)
    for ident in rng.sample(IDENTITIES, rng.randint(1, 3)):
        ops = ident(ops, rng, c.num_qubits)
    return Circuit(num_qubits=c.num_qubits, num_clbits=c.num_clbits, ops=tuple(ops))


# -- one changed gate ------------------------------------------------------------------------


def mutate(c: Circuit, rng: random.Random) -> Circuit:
    """Change one gate so that the new gate is not the old one times a phase."""
    ops = list(c.ops)
    n = c.num_qubits
    i = rng.choice([j for j, op in enumerate(ops) if op.name in GATES])
    op = ops[i]
    how = rng.choice(("angle", "kind", "qubits", "drop"))
    if how == "angle" and op.params:
        k = rng.randrange(len(op.params))
        params = list(op.params)
        params[k] = float(params[k]) + angle(rng)  # a shift in (0.3, 5.9): never ≡ 0 mod 2π
        ops[i] = Op(name=op.name, qubits=op.qubits, params=tuple(params))
    elif how == "kind" and not op.params and op.name in ONE_Q + TWO_Q:
        pool = ONE_Q if op.name in ONE_Q else TWO_Q
        ops[i] = Op(name=rng.choice([g for g in pool if g != op.name]), qubits=op.qubits)
    elif how == "qubits" and len(op.qubits) == 1 and n > 1:
        # G on another qubit: G⊗I and I⊗G agree up to phase only when G is a phase.
        q = rng.choice([x for x in range(n) if x != op.qubits[0]])
        ops[i] = Op(name=op.name, qubits=(q,), params=op.params)
    elif how == "qubits" and op.name in ("cx", "cy", "ch", "csx", "crx", "cry", "crz"):
        ops[i] = Op(name=op.name, qubits=op.qubits[::-1], params=op.params)
    else:
        # Dropping a gate that is not a phase times I (every library gate here, at these
        # angles) changes the unitary.
        if op.name == "id":
            ops.insert(i, Op(name="h", qubits=(op.qubits[0],)))
        else:
            del ops[i]
    return Circuit(num_qubits=n, num_clbits=c.num_clbits, ops=tuple(ops))


def make_pairs(count: int, seed: int) -> list[tuple[Circuit, Circuit, bool]]:
    rng = random.Random(seed)
    pairs = []
    for k in range(count):
        n = rng.randint(2, 5)
        base = random_circuit(rng, n, rng.randint(4, 14))
        variant = equivalent_variant(base, rng)
        if k % 2 == 0:
            pairs.append((base, variant, True))
        else:
            pairs.append((base, mutate(variant, rng), False))
    return pairs


PAIRS = make_pairs(200, seed=2026)


def test_pairs_are_what_they_claim_by_an_independent_route() -> None:
    # The construction, cross-checked on states from |0…0> with the reference simulator:
    # equivalent pairs give the same state up to phase (a necessary condition).
    for a, b, same in PAIRS:
        if same:
            sa, sb = statevector(a), statevector(b)
            assert abs(abs(np.vdot(sa, sb)) - 1) < 1e-9


@pytest.mark.parametrize("method", ["unitary", "random_states"])
def test_200_random_pairs_classified_with_zero_errors(method: str) -> None:
    exact_max = 12 if method == "unitary" else 0
    errors = []
    for index, (a, b, same) in enumerate(PAIRS):
        result = check_equivalence(a, b, exact_max_qubits=exact_max, seed=index)
        assert result.method in (method, "structure")
        if result.equivalent != same:
            errors.append((index, same, result.detail))
    assert errors == []
    assert sum(same for *_, same in PAIRS) == 100


def test_wide_circuits_use_the_randomized_check_with_a_stated_confidence() -> None:
    rng = random.Random(7)
    for k in range(6):
        base = random_circuit(rng, 14, 30)
        variant = equivalent_variant(base, rng)
        other = mutate(variant, rng)
        ok = check_equivalence(base, variant, seed=k)
        bad = check_equivalence(base, other, seed=k)
        assert ok.method == "random_states" and ok.equivalent, ok.detail
        assert not bad.equivalent, bad.detail
        assert "probability <=" in ok.confidence
    # The bound itself: 14 qubits, 8 states, τ = 1e-9, η = 1e-3 → tiny; and it is capped.
    assert random_states_confidence(14, 8) < 1e-40
    assert random_states_confidence(30, 1, tolerance=1e-3) == 1.0


def test_measurements_must_be_preserved_as_they_are() -> None:
    bell = [Op(name="h", qubits=(0,)), Op(name="cx", qubits=(0, 1))]
    a = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(*bell, Op(name="measure", qubits=(0, 1), clbits=(0, 1))),
    )
    swapped_bits = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(*bell, Op(name="measure", qubits=(0, 1), clbits=(1, 0))),
    )
    one_fewer = Circuit(
        num_qubits=2, num_clbits=2, ops=(*bell, Op(name="measure", qubits=(0,), clbits=(0,)))
    )
    mid = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            bell[0],
            Op(name="measure", qubits=(0,), clbits=(0,)),
            bell[1],
            Op(name="measure", qubits=(1,), clbits=(1,)),
        ),
    )
    split = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            *bell,
            Op(name="measure", qubits=(1,), clbits=(1,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
        ),
    )
    for other in (swapped_bits, one_fewer, mid):
        result = check_equivalence(a, other)
        assert not result.equivalent and result.method == "structure", result.detail
    # The same measurements in another order are the same measurements.
    assert check_equivalence(a, split).equivalent


def test_named_parameters_are_compared_at_random_bindings() -> None:
    a = Circuit(
        num_qubits=1,
        ops=(
            Op(name="rz", qubits=(0,), params=("theta",)),
            Op(name="rz", qubits=(0,), params=("theta",)),
        ),
        parameters=("theta",),
    )
    b = Circuit(
        num_qubits=1, ops=(Op(name="rz", qubits=(0,), params=("2*theta",)),), parameters=("theta",)
    )
    c = Circuit(
        num_qubits=1, ops=(Op(name="rz", qubits=(0,), params=("theta",)),), parameters=("theta",)
    )
    same = check_equivalence(a, b)
    assert same.equivalent and "random parameter points" in same.detail
    assert not check_equivalence(a, c).equivalent
    d = Circuit(num_qubits=1, ops=(Op(name="rz", qubits=(0,), params=(0.5,)),))
    assert check_equivalence(a, d).method == "structure"


def test_too_wide_is_not_claimed_equivalent() -> None:
    c = Circuit(num_qubits=22, ops=(Op(name="h", qubits=(0,)),))
    result = check_equivalence(c, c, max_qubits=20)
    assert not result.equivalent and result.method == "none"


def test_fused_simulation_matches_the_reference_simulator() -> None:
    # The checker's own (fused, batched) simulation against the verifier's ground truth.
    from qbus.ai.equivalence import _apply_all, _gates

    rng = random.Random(11)
    for n in (2, 3, 5, 7):
        c = random_circuit(rng, n, 25)
        zero = np.zeros((1 << n, 1), dtype=np.complex128)
        zero[0, 0] = 1.0
        ours = _apply_all(zero, _gates(c, {}), n)[:, 0]
        assert np.allclose(ours, statevector(c), atol=1e-12)


def test_a_check_past_its_time_limit_is_not_a_pass() -> None:
    rng = random.Random(5)
    a = random_circuit(rng, 12, 60)
    result = check_equivalence(a, a, time_limit=1e-4)
    assert not result.equivalent and result.method == "timeout"
    assert "did not finish within" in result.detail
