"""Classical control in the IR: encoding, hash stability, schema, invariants."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from qbus.errors import SchemaError
from qbus.schemas.ir import (
    MAX_CONDITION_DEPTH,
    MAX_CONTROL_DEPTH,
    Circuit,
    Condition,
    Op,
    canonical_bytes,
    circuit_hash,
    control_constructs,
    decode_circuit,
    shot_by_shot,
    stats,
    walk_ops,
)
from tests.samples import BELL

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = Path(__file__).parent.parent / "schemas"

# The hash of tests/samples.py's BELL as computed before classical control was added
# (commit 36e4a73): the new fields are omitted when empty, so it must not move.
BELL_HASH_BEFORE_CONTROL_FLOW = (
    "sha256:ef7da241cb06486025342c8becef2cf9b576d7d279cc003cd5a23759a36b986a"
)


def x_on(q: int) -> Op:
    return Op(name="x", qubits=(q,))


def teleport_like() -> Circuit:
    """Measure, then an if/else on a 2-bit register and a while loop on one bit."""
    return Circuit(
        num_qubits=3,
        num_clbits=3,
        ops=(
            Op(name="h", qubits=(0,)),
            Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
            Op(
                name="if",
                qubits=(1, 2),
                condition=Condition(clbits=(0, 1), value=1),
                body=(x_on(2),),
                orelse=(Op(name="rz", qubits=(1,), params=(0.5,)),),
            ),
            Op(
                name="while",
                qubits=(0,),
                condition=Condition(
                    op="and",
                    args=(
                        Condition(clbits=(0,), value=1),
                        Condition(op="not", args=(Condition(op=">=", clbits=(1, 2), value=3),)),
                    ),
                ),
                body=(Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,))),
            ),
            Op(name="measure", qubits=(2,), clbits=(2,)),
        ),
    )


def test_a_circuit_without_control_flow_hashes_as_before():
    assert circuit_hash(BELL) == BELL_HASH_BEFORE_CONTROL_FLOW
    assert b"condition" not in canonical_bytes(BELL) and b"body" not in canonical_bytes(BELL)


def test_dynamic_circuit_golden_file_round_trips():
    path = GOLDEN / "ir.dynamic.json"
    circuit = teleport_like()
    if os.environ.get("QBUS_REGEN_GOLDEN"):
        path.write_bytes(canonical_bytes(circuit) + b"\n")
    assert canonical_bytes(circuit) + b"\n" == path.read_bytes()
    assert decode_circuit(path.read_bytes()) == circuit


def test_nested_angles_are_normalised_for_the_hash():
    def with_angle(angle: float) -> Circuit:
        body = (Op(name="rz", qubits=(0,), params=(angle,)),)
        cond = Condition(clbits=(0,), value=1)
        return Circuit(
            num_qubits=1,
            num_clbits=1,
            ops=(Op(name="if", qubits=(0,), condition=cond, body=body),),
        )

    assert circuit_hash(with_angle(-0.0)) == circuit_hash(with_angle(0.0))
    assert circuit_hash(with_angle(0.0)) != circuit_hash(with_angle(0.1))


def test_committed_json_schema_accepts_control_flow_and_refuses_a_bad_condition():
    schema = json.loads((SCHEMAS / "circuit.ingested.json").read_text())
    circuit_schema = {**schema["$defs"]["Circuit"], "$defs": schema["$defs"]}
    doc = json.loads(canonical_bytes(teleport_like()))
    jsonschema.validate(doc, circuit_schema)
    doc["ops"][2]["condition"]["value"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, circuit_schema)


def test_walk_and_constructs_and_stats_see_nested_ops():
    c = teleport_like()
    names = [op.name for op in walk_ops(c.ops)]
    assert names == ["h", "measure", "if", "x", "rz", "while", "h", "measure", "measure"]
    assert control_constructs(c) == ["if", "while"]
    assert control_constructs(BELL) == []
    assert stats(c).gates == 4  # h, x, rz, h: nested gates count


def test_condition_evaluates_registers_lsb_first():
    cond = Condition(clbits=(2, 0), value=1)  # clbit 2 is the register's bit 0
    assert cond.evaluate(0b100) and not cond.evaluate(0b001)
    assert Condition(op="<", clbits=(0, 1), value=2).evaluate(0b01)
    assert not Condition(op="<", clbits=(0, 1), value=2).evaluate(0b10)
    either = Condition(
        op="or", args=(Condition(clbits=(0,), value=1), Condition(clbits=(1,), value=1))
    )
    assert either.evaluate(0b10) and not either.evaluate(0b00)


def _doc(ops: list[dict], clbits: int = 2, qubits: int = 2) -> bytes:
    return json.dumps({"num_qubits": qubits, "num_clbits": clbits, "ops": ops}).encode()


IF_X1 = {
    "name": "if",
    "qubits": [1],
    "condition": {"clbits": [0], "value": 1},
    "body": [{"name": "x", "qubits": [1]}],
}


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{**IF_X1, "condition": None}], "needs a condition"),
        ([{**IF_X1, "qubits": [0, 1]}], "must list the qubits its ops touch"),
        ([{**IF_X1, "name": "while", "orelse": [{"name": "x", "qubits": [1]}]}], "takes no orelse"),
        (
            [{"name": "x", "qubits": [0], "condition": {"clbits": [0], "value": 1}}],
            "takes no condition",
        ),
        ([{**IF_X1, "condition": {"clbits": [0], "value": 2}}], "does not fit 1 clbit"),
        ([{**IF_X1, "condition": {"clbits": [0], "value": -1}}], "must be >= 0"),
        ([{**IF_X1, "condition": {"op": "===", "clbits": [0]}}], "unknown condition operator"),
        ([{**IF_X1, "condition": {"op": "not", "args": []}}], "exactly one operand"),
        ([{**IF_X1, "condition": {"op": "and", "clbits": [0]}}], "takes args"),
        ([{**IF_X1, "condition": {"clbits": [5], "value": 1}}], "reads clbit 5"),
        (
            [{**IF_X1, "body": [{"name": "measure", "qubits": [1], "clbits": [7]}]}],
            "writes clbit 7",
        ),
        ([{**IF_X1, "qubits": [4], "body": [{"name": "x", "qubits": [4]}]}], "uses qubit 4"),
    ],
)
def test_invalid_control_flow_is_refused_with_a_path(ops, message):
    with pytest.raises(SchemaError, match=message) as info:
        decode_circuit(_doc(ops))
    assert info.value.code == "invalid_schema"


def test_nesting_deeper_than_the_bound_is_refused():
    op = x_on(0)
    for _ in range(MAX_CONTROL_DEPTH):
        op = Op(name="if", qubits=(0,), condition=Condition(clbits=(0,), value=1), body=(op,))
    Circuit(num_qubits=1, num_clbits=1, ops=(op,))  # exactly at the bound: fine
    deeper = Op(name="if", qubits=(0,), condition=Condition(clbits=(0,), value=1), body=(op,))
    with pytest.raises(ValueError, match="nested deeper than"):
        Circuit(num_qubits=1, num_clbits=1, ops=(deeper,))


def test_condition_nesting_is_bounded():
    cond = Condition(clbits=(0,), value=1)
    for _ in range(MAX_CONDITION_DEPTH - 1):
        cond = Condition(op="not", args=(cond,))
    with pytest.raises(ValueError, match="nested deeper than"):
        Condition(op="not", args=(cond,))


def _g(name: str, q: int) -> Op:
    return Op(name=name, qubits=(q,))


def _m(q: int) -> Op:
    return Op(name="measure", qubits=(q,), clbits=(0,))


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([_g("h", 0), _m(0)], False),
        ([_g("reset", 0), _g("h", 0), _m(0)], False),  # a fresh qubit's reset is a no-op
        ([_m(0), _g("x", 0)], True),
        ([_m(0), _m(0)], False),  # measuring again reads the same bit: still sampled
        ([_g("h", 0), _g("reset", 0)], True),
        ([_m(0), _g("barrier", 0)], False),
        ([_m(0), _g("h", 1)], False),  # other qubits may go on
    ],
)
def test_shot_by_shot(ops: list[Op], expected: bool) -> None:
    assert shot_by_shot(Circuit(num_qubits=2, num_clbits=1, ops=tuple(ops))) is expected


def test_control_flow_is_shot_by_shot() -> None:
    cond = Condition(clbits=(0,), value=1)
    ops = (_g("h", 0), Op(name="if", qubits=(1,), condition=cond, body=(_g("x", 1),)))
    assert shot_by_shot(Circuit(num_qubits=2, num_clbits=1, ops=ops))
