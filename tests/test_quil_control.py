"""Quil's JUMP-WHEN/JUMP-UNLESS patterns as IR if/while (issue 21)."""

from __future__ import annotations

import math

import pytest
from pyquil import Program
from pyquil.gates import MEASURE, RY, H, X

from qbus.engines import reference
from qbus.engines.aer import AerEngine
from qbus.engines.base import RunRequest
from qbus.errors import CircuitError
from qbus.frontends.quil import from_pyquil, parse_quil
from qbus.schemas.ir import Condition
from qbus.verifier.statistics import check_counts

IF_ELSE_UNLESS = """DECLARE ro BIT[2]
H 0
MEASURE 0 ro[0]
JUMP-UNLESS @else ro[0]
X 1
JUMP @end
LABEL @else
H 1
LABEL @end
MEASURE 1 ro[1]
"""


def test_pyquil_if_then_and_while_do_become_if_and_while():
    p = Program()
    ro = p.declare("ro", "BIT", 2)
    p += H(0)
    p += MEASURE(0, ro[0])
    p.if_then(ro[0], Program(X(1)), Program(RY(0.6, 1)))
    p.while_do(ro[0], Program(H(0), MEASURE(0, ro[0])))
    p += MEASURE(1, ro[1])
    circuit = from_pyquil(p)
    assert [op.name for op in circuit.ops] == ["h", "measure", "if", "while", "measure"]
    branch, loop = circuit.ops[2], circuit.ops[3]
    assert branch.condition == Condition(clbits=(0,), value=1)
    assert [op.name for op in branch.body] == ["x"]
    assert [op.name for op in branch.orelse] == ["ry"]
    assert loop.condition == Condition(clbits=(0,), value=1)
    exact = reference.probabilities(circuit)
    # ro[1] is 1 after X (ro[0] = 1) or, after RY(0.6), with sin^2(0.3); the loop
    # always leaves ro[0] at 0.
    assert exact == pytest.approx(
        {"00": 0.5 * math.cos(0.3) ** 2, "10": 0.5 + 0.5 * math.sin(0.3) ** 2}, abs=1e-12
    )


@pytest.mark.parametrize(
    ("jump", "value"), [("JUMP-UNLESS @skip ro[0]", 1), ("JUMP-WHEN @skip ro[0]", 0)]
)
def test_a_skip_over_one_block_is_an_if(jump, value):
    text = f"DECLARE ro BIT[2]\nH 0\nMEASURE 0 ro[0]\n{jump}\nX 1\nLABEL @skip\nMEASURE 1 ro[1]\n"
    circuit = parse_quil(text)
    assert circuit.ops[2].condition == Condition(clbits=(0,), value=value)
    # X 1 runs when ro[0] reads `value`: ro[1] copies ro[0] (value 1) or negates it (0).
    expected = {"00": 0.5, "11": 0.5} if value else {"10": 0.5, "01": 0.5}
    assert reference.probabilities(circuit) == pytest.approx(expected, abs=1e-12)


def test_jump_unless_with_else_runs_on_aer_like_the_reference():
    circuit = parse_quil(IF_ELSE_UNLESS)
    exact = reference.probabilities(circuit)
    assert exact == pytest.approx({"00": 0.25, "10": 0.25, "11": 0.5}, abs=1e-12)
    counts = AerEngine().run(RunRequest(circuit=circuit, shots=4000, seed=2)).counts
    assert check_counts(counts, exact, 4000).verdict == "pass"


@pytest.mark.parametrize(
    "text",
    [
        # a do-while (jump back on the condition): not a pattern the IR holds
        "DECLARE ro BIT[1]\nLABEL @a\nH 0\nMEASURE 0 ro[0]\nJUMP-WHEN @a ro[0]\n",
        # a jump to nowhere
        "DECLARE ro BIT[1]\nMEASURE 0 ro[0]\nJUMP-WHEN @end ro[0]\nX 0\n",
        # an unconditional loop
        "DECLARE ro BIT[1]\nLABEL @a\nX 0\nJUMP @a\n",
    ],
)
def test_other_jumps_are_still_refused(text):
    with pytest.raises(CircuitError) as info:
        parse_quil(text)
    assert info.value.code == "quil_unsupported"


def test_jump_condition_must_be_a_bit_region():
    text = (
        "DECLARE ro BIT[1]\nDECLARE r REAL[1]\nJUMP-UNLESS @s r[0]\nX 0\nLABEL @s\n"
        "MEASURE 0 ro[0]\n"
    )
    with pytest.raises(CircuitError, match="declared BIT region") as info:
        parse_quil(text)
    assert info.value.code == "quil_unsupported"
