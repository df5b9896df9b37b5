"""Issue 21's coverage matrix: every construct through its front end, on every engine.

Each program uses one construct the issue lists. It is parsed by its front end, then
for every engine shipped with qbus (from the registry; an engine not installed here is
skipped with the reason, never counted as a pass):

* an engine whose capabilities claim what the circuit needs (its classical-control
  constructs in ``Capabilities.classical_control``, and shot-by-shot ``sample`` for
  mid-circuit measurement) runs it, and the counts must pass the verifier's chi-square
  test against the reference engine's exact distribution;
* any other engine must refuse it in ``validate`` with the code that says why.

Constructs no engine claims (among those deployed) get the router's rejection code,
and classical computation at run time (which the IR has no op for) gets the OpenQASM 3
front end's code.
"""

from __future__ import annotations

import pytest

from qbus.engines import reference
from qbus.engines.base import Engine, RunRequest
from qbus.engines.registry import available_engines, get_engine
from qbus.errors import EngineError, QasmSyntaxError, Reject
from qbus.frontends.qasm import parse_qasm
from qbus.frontends.quil import parse_quil
from qbus.router.capability import BUILTIN_CONTROL, route_control
from qbus.schemas.ir import Circuit, control_constructs, shot_by_shot
from qbus.verifier.statistics import check_counts

SHOTS = 2000
H2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
H3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
ALPHA = {"alpha": 0.7}

QASM = {
    "qasm2_if": H2 + "qreg q[2];\ncreg c[2];\nh q[0];\nmeasure q[0] -> c[0];\n"
    "if (c==1) x q[1];\nmeasure q[1] -> c[1];\n",
    "qasm3_if_else_bit": H3 + "qubit[2] q;\nbit[2] c;\nh q[0];\nc[0] = measure q[0];\n"
    "if (c[0]) { x q[1]; } else { ry(0.5) q[1]; }\nc[1] = measure q[1];\n",
    "qasm3_if_register_logic": H3 + "qubit[3] q;\nbit[3] c;\nh q[0];\nh q[1];\n"
    "c[0] = measure q[0];\nc[1] = measure q[1];\n"
    "if (c >= 1 && !(c == 3) || c[1] == 1) { x q[2]; } else if (c != 0) { h q[2]; }"
    " else { ry(0.4) q[2]; }\nc[2] = measure q[2];\n",
    "qasm3_if_block_measures_and_resets": H3 + "qubit[3] q;\nbit[3] c;\nh q[0];\n"
    "c[0] = measure q[0];\nry(0.9) q[1];\n"
    "if (c[0] == 1) { h q[1]; c[1] = measure q[1]; reset q[1]; ry(0.5) q[1]; }\n"
    "if (c[1] == 1) { x q[2]; } else { h q[2]; }\nc[2] = measure q[2];\n",
    "qasm3_while": H3 + "qubit[2] q;\nbit[2] c;\nh q[0];\nc[0] = measure q[0];\n"
    "while (c[0] == 1) { h q[0]; c[0] = measure q[0]; }\nh q[1];\nc[1] = measure q[1];\n",
    "qasm3_for_range_set": H3 + "qubit[3] q;\nbit[3] c;\n"
    "for int i in [0:2] { rx(0.4 * i + 0.2) q[i]; }\nfor uint j in {0, 2} { h q[j]; }\n"
    "c = measure q;\n",
    # Bits declared with a measurement as initialiser, and assigned from one; constants
    # of every type the front end has.
    "qasm3_bit_and_const_declarations": H3 + "const int n = 1;\nconst uint k = 0;\n"
    "const float f = 0.5;\nconst angle a = pi / 4;\nqubit[2] q;\nh q[0];\n"
    "bit m = measure q[0];\nbit[2] c;\nif (m) { rx(f * n) q[1]; } else { ry(a + k) q[1]; }\n"
    "c[0] = measure q[1];\nc[1] = measure q[0];\n",
    # Classical variables holding values known when parsing: folded like constants,
    # assignments (in an unrolled for) in program order, a condition decided when parsed.
    "qasm3_classical_folded": H3 + "int[8] n = 1;\nuint[4] m;\nbool flag = true;\n"
    "float[64] f = 0.25;\nangle[16] a = pi / 8;\nqubit[3] q;\nbit[3] c;\n"
    "for int i in [0:2] { m += i; f *= 2; }\nh q[0];\nrx(f) q[1];\nry(a * m) q[2];\n"
    "if (flag && m == 3) { cx q[0], q[n + 1]; }\nc = measure q;\n",
    # Variables measured into: clbits, read by conditions (unsigned, signed, bool).
    "qasm3_measured_variables": H3 + "qubit[2] a;\nqubit[2] b;\nh a;\n"
    "uint[2] x = measure a;\nint[2] s;\ns = measure a;\n"
    "if (x >= 2) { x b[0]; } else { ry(0.6) b[0]; }\nif (s == -1 || s > 0) { h b[1]; }\n"
    "bool r = measure b[0];\nif (!r) { rx(0.3) b[1]; }\nbit e = measure b[1];\n",
    "qasm3_modifiers": H3 + "qubit[3] q;\nbit[3] c;\nh q[0];\nctrl @ x q[0], q[1];\n"
    "negctrl @ h q[1], q[2];\ninv @ s q[0];\npow(2) @ t q[2];\nrx(0.3) q[2];\n"
    "ctrl(2) @ x q[0], q[1], q[2];\nc = measure q;\n",
    "qasm3_gphase_const_input": H3 + "const float th = 0.4;\ninput float alpha;\n"
    "qubit[2] q;\nbit[2] c;\ngphase(0.3);\nrx(th) q[0];\nry(alpha) q[1];\nc = measure q;\n",
    "qasm3_barrier_delay_box": H3 + "qubit[2] q;\nbit[2] c;\nh q[0];\nbarrier q;\n"
    "delay[100ns] q[0];\nbox { cx q[0], q[1]; }\nc = measure q;\n",
    "qasm3_physical_qubits": H3 + "bit[2] c;\nh $0;\ncx $0, $1;\nry(0.3) $1;\n"
    "c[0] = measure $0;\nc[1] = measure $1;\n",
    "qasm2_qelib1_extras": H2 + "qreg q[5];\ncreg c[5];\nh q[0];\nh q[1];\nh q[2];\n"
    "h q[3];\nrccx q[0],q[1],q[4];\nrc3x q[0],q[1],q[2],q[3];\nc3x q[0],q[1],q[2],q[3];\n"
    "c3sqrtx q[1],q[2],q[3],q[4];\nc4x q[0],q[1],q[2],q[3],q[4];\nmeasure q -> c;\n",
}

QUIL = {
    "quil_jump_unless_else": "DECLARE ro BIT[2]\nH 0\nMEASURE 0 ro[0]\n"
    "JUMP-UNLESS @else ro[0]\nX 1\nJUMP @end\nLABEL @else\nH 1\nLABEL @end\nMEASURE 1 ro[1]\n",
    "quil_jump_when_skip": "DECLARE ro BIT[2]\nH 0\nMEASURE 0 ro[0]\nJUMP-WHEN @skip ro[0]\n"
    "RY(0.6) 1\nLABEL @skip\nMEASURE 1 ro[1]\n",
    "quil_while": "DECLARE ro BIT[2]\nH 0\nMEASURE 0 ro[0]\nLABEL @start\n"
    "JUMP-UNLESS @end ro[0]\nH 0\nMEASURE 0 ro[0]\nJUMP @start\nLABEL @end\nH 1\n"
    "MEASURE 1 ro[1]\n",
}

PROGRAMS = sorted([*QASM, *QUIL])
ENGINES = sorted(BUILTIN_CONTROL)


def parse(name: str) -> Circuit:
    return parse_quil(QUIL[name]) if name in QUIL else parse_qasm(QASM[name])[0]


def claims(engine: Engine, circuit: Circuit) -> bool:
    """Whether the engine's capabilities say it runs ``circuit`` (method ``sample``)."""
    control = set(control_constructs(circuit)) <= set(engine.capabilities.classical_control)
    return control and (not shot_by_shot(circuit) or "sample" in engine.mid_circuit_methods)


@pytest.fixture(scope="module")
def exact() -> dict[str, dict[str, float]]:
    return {name: reference.probabilities(parse(name), ALPHA) for name in PROGRAMS}


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("name", PROGRAMS)
def test_each_construct_runs_on_each_engine_that_claims_it(name, engine_name, exact):
    if engine_name not in available_engines():
        pytest.skip(f"engine {engine_name!r} is not installed here")
    engine = get_engine(engine_name)
    circuit = parse(name)
    params = ALPHA if circuit.parameters else {}
    request = RunRequest(circuit=circuit, shots=SHOTS, seed=17, parameters=params)
    if not claims(engine, circuit):
        with pytest.raises(EngineError) as info:
            engine.validate(request)
        expected = "classical_control_unsupported" if control_constructs(circuit) else None
        assert info.value.code == (expected or "mid_circuit_measurement"), info.value
        return
    counts = engine.run(request).counts
    assert sum(counts.values()) == SHOTS
    verdict = check_counts(counts, exact[name], SHOTS)
    assert verdict.verdict == "pass", f"{engine_name}: {verdict.detail}"


def test_every_control_program_runs_somewhere_besides_the_reference():
    runners = {e for e in ENGINES if e != "reference"}
    for name in PROGRAMS:
        constructs = set(control_constructs(parse(name)))
        if constructs:
            assert any(constructs <= set(BUILTIN_CONTROL[e]) for e in runners), name


@pytest.mark.parametrize("construct", ["if", "while"])
def test_a_construct_no_deployed_engine_claims_is_rejected_by_the_router(construct):
    name = {"if": "qasm3_if_else_bit", "while": "qasm3_while"}[construct]
    circuit = parse(name)
    deployed = [e for e in ENGINES if construct not in BUILTIN_CONTROL[e]]
    with pytest.raises(Reject) as info:
        route_control("auto", deployed[0], "default", circuit, deployed)
    assert info.value.code == "classical_control_unsupported"
    assert f"'{construct}'" in str(info.value)
    # A named engine that cannot run it is refused too, naming the engines that can.
    with pytest.raises(Reject) as info:
        route_control(deployed[0], deployed[0], "named", circuit, ENGINES)
    assert info.value.code == "classical_control_unsupported"
    assert "reference" in str(info.value)


@pytest.mark.parametrize(
    "statement",
    [
        "x = x + 1;",
        "x += 1;",
        "rx(x) q[0];",
        "uint[2] y = x * 2;",
    ],
)
def test_classical_computation_at_run_time_is_refused_with_a_code(statement):
    with pytest.raises(QasmSyntaxError, match="no classical arithmetic") as info:
        parse_qasm(H3 + f"qubit[2] q;\nuint[2] x = measure q;\n{statement}\n")
    assert info.value.code == "unsupported_feature"
