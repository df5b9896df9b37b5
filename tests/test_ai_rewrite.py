"""AI rewrites through the whole bus: a real nats-server, every stage, a real engine, and a
local HTTP server speaking Ollama's API (``tests/ollama_server.py``) with recorded answers.

Acceptance of the AI issue: an invalid answer is retried and fixed; a non-equivalent
"optimisation" is rejected by the equivalence check and the job completes with the
deterministic result; an equivalent shorter rewrite is accepted and recorded; with no
server reachable the job completes with a warning.
"""

from __future__ import annotations

import socket

import msgspec
import pytest

from qbus.ai.prompting import load_prompt
from qbus.bus.config import AiConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.consumers.pipeline import Pipeline
from qbus.frontends.qasm import parse_qasm, to_qasm3
from qbus.passes import optimize
from qbus.schemas.events import CircuitRewritten, Event, ExecutionRequested, JobCompleted
from qbus.schemas.ir import circuit_hash
from tests.jobs import job, run_jobs
from tests.ollama_server import DIGEST, FakeOllama

pytestmark = pytest.mark.timeout(120)

STAGES = ("ingest", "rewrite", "route", "execute", "verify")

# q0 is flipped; H·CX·H on q1 is a CZ, which on |q1=0> does nothing: counts are all "01".
# The S·S† pair is for the deterministic passes, which leave H·CX·H alone.
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
x q[0];
s q[1];
sdg q[1];
h q[1];
cx q[0], q[1];
h q[1];
c = measure q;
"""

HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
MEASURE = "c[0] = measure q[0];\nc[1] = measure q[1];\n"


def fenced(body: str) -> str:
    return f"```qasm\n{HEADER}{body}{MEASURE}```"


CZ_REWRITE = fenced("x q[0];\ncz q[0], q[1];\n")  # equivalent, 2 gates instead of 4
NOT_EQUIVALENT = fenced("x q[0];\ncx q[1], q[0];\n")  # shorter, but another unitary
LONGER = fenced("x q[0];\nh q[1];\ncx q[0], q[1];\nh q[1];\nz q[0];\nz q[0];\n")
DOES_NOT_PARSE = fenced("x q[0];\ncz q[0] q[1];\n")  # missing comma
DROPS_A_MEASUREMENT = f"```qasm\n{HEADER}x q[0];\ncz q[0], q[1];\nc[0] = measure q[0];\n```"

DETERMINISTIC = optimize(parse_qasm(PROGRAM)[0])[0]


def with_ai(config: Config, host: str, **kw: object) -> Config:
    ai = AiConfig(host=host, timeout=15, max_retries=1, **kw)  # type: ignore[arg-type]
    return msgspec.structs.replace(config, ai=ai)


async def job_events(bus: Bus, job_id: str) -> list[Event]:
    return [event async for _, _, event in events_of(bus, job_id, timeout=2.0)]


def one(events: list[Event], kind: type) -> Event:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, found
    return found[0]


async def run_ai_job(bus: Bus, **fields: object) -> tuple[JobCompleted, CircuitRewritten, list]:
    submitted = job(PROGRAM, shots=200, ai_optimize=True, **fields)
    (final,) = await run_jobs(bus, [submitted])
    assert isinstance(final, JobCompleted), final
    assert final.verification.verdict == "pass"
    assert final.counts == {"01": 200}
    events = await job_events(bus, submitted.job_id)
    return final, one(events, CircuitRewritten), events


async def test_invalid_answer_is_retried_and_an_equivalent_shorter_rewrite_accepted(
    config: Config, bus: Bus
) -> None:
    with FakeOllama(answers=[DOES_NOT_PARSE, CZ_REWRITE]) as server:
        async with Pipeline(with_ai(config, server.url), stages=STAGES) as pipeline:
            final, rewritten, events = await run_ai_job(bus)
            pipeline.check()
    ai = rewritten.ai
    assert ai is not None and ai.verdict == "accepted", ai
    assert ai.attempts == 2
    assert (ai.model, ai.model_digest) == ("qwen2.5-coder:7b", DIGEST)
    assert ai.prompt_version == load_prompt("rewrite").version
    assert ai.check == "unitary" and "equal up to global phase" in ai.check_detail
    assert ai.confidence == "exact"
    assert (ai.gates_proposed, ai.depth_proposed) == (2, 3)  # depth counts the measure
    # The accepted circuit is what ran.
    proposal = parse_qasm(ai.proposed_qasm)[0]
    assert rewritten.circuit == proposal
    assert rewritten.circuit_hash == circuit_hash(proposal)
    assert (rewritten.before.gates, rewritten.after.gates) == (6, 2)
    assert [p.name for p in rewritten.passes][-1] == "ai_rewrite"
    assert rewritten.passes[-1].removed == 2  # 4 gates after the passes → 2
    assert one(events, ExecutionRequested).circuit_hash == circuit_hash(proposal)
    assert final.circuit_hash == circuit_hash(proposal)
    # What the model saw: the deterministic result as OpenQASM 3; then the parser's error.
    first, second = server.chats()
    assert first["messages"][-1]["content"] == f"```qasm\n{to_qasm3(DETERMINISTIC)}```"
    assert "[qasm_syntax]" in second["messages"][-1]["content"]
    assert "line 6" in second["messages"][-1]["content"]


async def test_rejected_proposals_leave_the_deterministic_result(config: Config, bus: Bus) -> None:
    answers = [NOT_EQUIVALENT, LONGER, DROPS_A_MEASUREMENT, DOES_NOT_PARSE, DOES_NOT_PARSE]
    with FakeOllama(answers=answers) as server:
        async with Pipeline(with_ai(config, server.url, stream=False), stages=STAGES) as p:
            results = [await run_ai_job(bus) for _ in range(4)]
            p.check()
        assert server.answers == []
    expected = {
        "not equivalent": ("unitary", "unitaries differ"),
        "longer": ("unitary", "worse than the deterministic result: gates 6 > 4"),
        "drops a measurement": ("structure", "final measurements differ"),
        "never parses": ("parse", "[qasm_syntax]"),
    }
    for (final, rewritten, _), (case, (check, detail)) in zip(
        results, expected.items(), strict=True
    ):
        ai = rewritten.ai
        assert ai is not None and ai.verdict == "rejected", (case, ai)
        assert ai.check == check and detail in ai.check_detail, (case, ai.check_detail)
        assert ai.model == "qwen2.5-coder:7b" and ai.model_digest == DIGEST
        assert ai.proposed_qasm
        # The deterministic passes' result is what ran.
        assert rewritten.circuit == DETERMINISTIC, case
        assert rewritten.circuit_hash == circuit_hash(DETERMINISTIC)
        assert "ai_rewrite" not in [p.name for p in rewritten.passes]
        assert final.circuit_hash == circuit_hash(DETERMINISTIC)
    assert results[3][1].ai.attempts == 2


async def test_no_server_reachable_completes_with_a_warning(config: Config, bus: Bus) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    async with Pipeline(with_ai(config, f"http://127.0.0.1:{port}"), stages=STAGES) as p:
        _, rewritten, _ = await run_ai_job(bus)
        plain = job(PROGRAM, shots=10)
        (final,) = await run_jobs(bus, [plain])
        p.check()
    ai = rewritten.ai
    assert ai is not None and ai.verdict == "unavailable"
    assert "no model server reachable" in ai.warning and "ollama serve" in ai.warning
    assert "deterministic result is kept" in ai.warning
    assert rewritten.circuit == DETERMINISTIC
    # A job that did not ask for the AI carries no AI record at all.
    assert isinstance(final, JobCompleted)
    plain_rewritten = one(await job_events(bus, plain.job_id), CircuitRewritten)
    assert plain_rewritten.ai is None


async def test_ai_switched_off_and_jobs_too_large_to_check(config: Config, bus: Bus) -> None:
    with FakeOllama(answers=[]) as server:
        off = with_ai(config, server.url, enabled=False)
        async with Pipeline(off, stages=STAGES) as p:
            _, rewritten, _ = await run_ai_job(bus)
            p.check()
        small = with_ai(config, server.url, max_ops=3)
        async with Pipeline(small, stages=STAGES) as p:
            _, too_big, _ = await run_ai_job(bus)
            p.check()
    assert server.requests == []  # neither asked the model
    assert rewritten.ai is not None and rewritten.ai.verdict == "unavailable"
    assert "switched off" in rewritten.ai.warning
    assert too_big.ai is not None and too_big.ai.verdict == "skipped"
    assert "max_ops=3" in too_big.ai.warning


async def test_the_ai_step_never_costs_a_job_its_result() -> None:
    # Straight at the rewriter: odd circuits and broken servers end in a report, not a raise.
    from qbus.ai.rewrite import AiRewriter
    from qbus.schemas.ir import Circuit, Op

    reserved = Circuit(
        num_qubits=1, ops=(Op(name="rz", qubits=(0,), params=("input",)),), parameters=("input",)
    )
    with FakeOllama(answers=["not used"]) as server:
        proposed, report = await AiRewriter(AiConfig(host=server.url)).rewrite(reserved)
        assert proposed is None and report.verdict == "skipped"
        assert "cannot be shown to the model" in report.warning
        assert server.requests == []
    # A server that answers 500 to everything (no recorded answer left).
    with FakeOllama(answers=[]) as server:
        proposed, report = await AiRewriter(AiConfig(host=server.url)).rewrite(DETERMINISTIC)
    assert proposed is None and report.verdict == "unavailable"
    assert "no recorded answer left" in report.warning
