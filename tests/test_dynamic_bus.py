"""Dynamic circuits through the bus (issue 21): routed to capable engines, verified exactly."""

from __future__ import annotations

import math

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines.registry import available_engines, get_engine
from qbus.router.capability import BUILTIN_CONTROL, control_engines, route_control
from qbus.schemas.events import JobCompleted, JobFailed, JobRejected
from qbus.schemas.ir import Circuit, Condition, Op
from tests.jobs import job, run_jobs
from tests.test_dynamic_circuits import TELEPORT, THETA

pytestmark = pytest.mark.timeout(180)

SHOTS = 4000


async def test_qasm2_if_program_completes_and_verifies_on_aer(bus: Bus, pipeline: Pipeline):
    (final,) = await run_jobs(bus, [job(TELEPORT, shots=SHOTS, seed=3)])
    assert isinstance(final, JobCompleted), final
    assert final.engine == "qiskit-aer"
    # Verified against the branch-enumerated exact distribution, not skipped.
    assert final.verification.test == "chi2", final.verification
    assert final.verification.verdict == "pass", final.verification
    assert sum(final.counts.values()) == SHOTS
    ones = sum(n for key, n in final.counts.items() if key[0] == "1")  # clbit 2: out
    expected = SHOTS * math.sin(THETA / 2) ** 2
    assert abs(ones - expected) < 6 * math.sqrt(expected)


async def test_a_named_engine_without_classical_control_is_refused_at_route(
    bus: Bus, pipeline: Pipeline
):
    (final,) = await run_jobs(bus, [job(TELEPORT, engine="quest")])
    assert isinstance(final, JobRejected), final
    assert final.code == "classical_control_unsupported"
    assert "engine 'quest' cannot run classical control ('if')" in final.message
    assert "engines that run it: qiskit-aer, reference, cirq, qsim" in final.message


async def test_no_deployed_engine_with_classical_control_names_the_construct(
    bus: Bus, config: Config
):
    # Loaded before the stages start: importing cirq inside the running loop would stall
    # the other in-process stages' first requests (each is its own process in production).
    get_engine("quest")
    async with Pipeline(config, engines=("quest",)) as pipeline:
        (final,) = await run_jobs(bus, [job(TELEPORT)])
        pipeline.check()
    assert isinstance(final, JobRejected), final
    assert final.code == "classical_control_unsupported"
    assert "no deployed engine runs classical control ('if')" in final.message
    assert "engines that run it: qiskit-aer, reference, cirq, qsim" in final.message


async def test_a_dynamic_json_ir_job_on_the_reference_engine_verifies(bus: Bus, config: Config):
    # A while loop (repeat until the qubit reads 0) as JSON IR, on the reference engine.
    body = (Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,)))
    circuit = Circuit(
        num_qubits=2,
        num_clbits=2,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="while", qubits=(0,), condition=Condition(clbits=(0,), value=1), body=body),
            Op(name="h", qubits=(1,)),
            Op(name="measure", qubits=(1,), clbits=(1,)),
        ),
    )
    text = msgspec.json.encode(circuit).decode()
    async with Pipeline(config, engines=("reference",)) as pipeline:
        (final,) = await run_jobs(bus, [job(text, format="json", shots=1000)])
        pipeline.check()
    assert isinstance(final, JobCompleted), final
    assert final.engine == "reference"
    assert final.verification.verdict == "pass", final.verification
    assert set(final.counts) == {"00", "10"}  # the loop always exits with clbit 0 = 0


def test_route_control_moves_auto_and_keeps_static_circuits():
    static = Circuit(
        num_qubits=1, num_clbits=1, ops=(Op(name="measure", qubits=(0,), clbits=(0,)),)
    )
    installed = ["quest", "qiskit-aer", "reference"]
    assert route_control("auto", "quest", "why", static, installed) == ("quest", "why")
    dynamic = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(
                name="if",
                qubits=(0,),
                condition=Condition(clbits=(0,), value=1),
                body=(Op(name="x", qubits=(0,)),),
            ),
        ),
    )
    engine, reason = route_control("auto", "quest", "why", dynamic, installed)
    assert engine == "qiskit-aer" and "classical control" in reason
    assert control_engines(["while"], installed, get_engine) == ["qiskit-aer", "reference"]


@pytest.mark.parametrize("engine", ["reference", "qiskit-aer"])
async def test_a_runaway_while_loop_ends_the_job_with_a_code(bus: Bus, config: Config, engine):
    runaway = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nbit c;\nx q;\nc = measure q;\n'
        "while (c == 1) { x q; x q; c = measure q; }\n"
    )
    get_engine(engine)  # imported before the in-process stages start, not inside their loop
    async with Pipeline(config, engines=(engine,)) as pipeline:
        (final,) = await run_jobs(bus, [job(runaway, shots=10)])
        pipeline.check()
    assert isinstance(final, JobFailed), final
    assert final.code == "loop_budget_exceeded"
    assert "1000 iterations" in final.message


async def test_a_loop_that_can_never_end_is_rejected_at_ingest(bus: Bus, pipeline: Pipeline):
    # Nothing in the body writes c: once entered, the loop would spin for ever.
    never_ends = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nbit c;\nh q;\nc = measure q;\n'
        "while (c == 1) { x q; }\n"
    )
    (final,) = await run_jobs(bus, [job(never_ends)])
    assert isinstance(final, JobRejected), final
    assert final.code == "unbounded_loop"
    assert "ops[2]" in final.message


@pytest.mark.parametrize("engine", sorted(BUILTIN_CONTROL))
def test_the_routers_control_table_is_what_each_engine_claims(engine: str):
    # Routing reads BUILTIN_CONTROL instead of importing every framework; it must say
    # what the engine itself declares.
    if engine not in available_engines():
        pytest.skip(f"{engine} is not installed here")
    claimed = get_engine(engine).capabilities.classical_control
    assert set(BUILTIN_CONTROL[engine]) == set(claimed), engine
