"""``qbus ai`` as a user runs it (separate processes), against the Ollama test double."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.consumers.pipeline import Pipeline
from qbus.frontends.job_template import validate_template
from qbus.schemas.events import JobSubmitted, decode
from tests.ollama_server import FakeOllama
from tests.test_ai import GHZ5, GHZ5_ANSWER, GHZ5_WRONG_GATE, H2_PLAN, free_port

pytestmark = pytest.mark.timeout(180)

QBUS = (sys.executable, "-m", "qbus")


async def submission(bus: Bus, job_id: str) -> JobSubmitted:
    """The job's JobSubmitted, from the log's submit subject."""
    sub = await bus.js.subscribe(bus.subjects.submit, ordered_consumer=True)
    try:
        while True:
            event = decode((await sub.next_msg(timeout=5)).data)
            if isinstance(event, JobSubmitted) and event.job_id == job_id:
                return event
    finally:
        await sub.unsubscribe()


def qbus_ai(*args: str, host: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QBUS_AI_HOST": host}
    env.pop("QBUS_CONFIG", None)
    cmd = [sys.executable, "-m", "qbus", *(["--url", url] if url else []), "ai", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_ask_retries_an_invalid_answer_then_shows_the_circuit() -> None:
    with FakeOllama(answers=[GHZ5_WRONG_GATE, GHZ5_ANSWER]) as server:
        out = qbus_ai("prepare a 5-qubit GHZ state and measure all", host=server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("# model qwen2.5-coder:7b (digest 2b0496514337), prompt qasm@1+")
    assert lines[0].endswith("2 attempt(s)")
    assert "attempt 1 rejected: [unknown_gate] unknown gate 'hadamard'" in lines[1]
    assert GHZ5.strip() in out.stdout
    # The drawing: one row per qubit, the CNOT ladder reaching q4.
    drawing = out.stdout.split(GHZ5.strip(), 1)[1]
    assert all(f"q_{i}" in drawing or f"q{i}" in drawing for i in range(5))


def test_ask_without_a_server_says_how_to_start_one() -> None:
    out = qbus_ai("a bell pair", "--model", "llama3.1:8b", host=f"http://127.0.0.1:{free_port()}")
    assert out.returncode != 0
    assert "no model server reachable" in out.stderr
    assert "ollama serve" in out.stderr and "ollama pull llama3.1:8b" in out.stderr


def test_ask_gives_up_naming_the_last_error() -> None:
    with FakeOllama(answers=[GHZ5_WRONG_GATE] * 2) as server:
        out = qbus_ai("ghz", "--retries", "1", host=server.url)
    assert out.returncode != 0
    assert "no valid OpenQASM 3 program in 2 attempt(s)" in out.stderr
    assert "last error: [unknown_gate]" in out.stderr


def test_plan_prints_a_validated_template_with_its_provenance(tmp_path: Path) -> None:
    target = tmp_path / "h2.yaml"
    with FakeOllama(answers=[H2_PLAN]) as server:
        out = qbus_ai("plan", "ground state of H2 at 0.74 Å", "--out", str(target), host=server.url)
    assert out.returncode == 0, out.stderr
    text = target.read_text()
    assert text.startswith("# proposed by model qwen2.5-coder:7b")
    assert "prompt plan@2+" in text.splitlines()[0]
    template = validate_template(text)
    assert template.name == "h2-vqe"
    assert yaml.safe_load(text)["optimizer"]["method"] == "COBYLA"


async def test_submit_runs_it_and_explain_summarises_it(config: Config, bus: Bus) -> None:
    url = config.bus.url
    async with Pipeline(config, stages=("ingest", "rewrite", "route", "execute", "verify")) as p:
        with FakeOllama(answers=[GHZ5_ANSWER]) as server:
            out = await asyncio.to_thread(
                qbus_ai, "5-qubit GHZ", "--submit", "--shots", "400", host=server.url, url=url
            )
        p.check()
    assert out.returncode == 0, out.stderr + out.stdout
    assert "verification: PASS" in out.stdout
    assert "00000" in out.stdout and "11111" in out.stdout
    job_id = out.stderr.split("submitted ", 1)[1].split()[0]
    submitted = await submission(bus, job_id)
    assert submitted.producer == "qbus.ai" and submitted.format == "qasm3"
    assert submitted.labels["ai_model"] == "qwen2.5-coder:7b"
    assert submitted.labels["ai_prompt_version"].startswith("qasm@1+")

    with FakeOllama(answers=["The GHZ job ran on qiskit-aer and passed its chi-square test."]) as s:
        explained = await asyncio.to_thread(qbus_ai, "explain", job_id, host=s.url, url=url)
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith("The GHZ job ran on qiskit-aer")
    assert "# model qwen2.5-coder:7b" in explained.stdout
    prompt = s.requests[-1][1]["prompt"]
    assert job_id in prompt and "job.completed" in prompt

    offline = await asyncio.to_thread(
        qbus_ai, "explain", job_id, host=f"http://127.0.0.1:{free_port()}", url=url
    )
    assert offline.returncode == 0, offline.stderr
    assert "AI unavailable" in offline.stderr
    assert "Routed to qiskit-aer" in offline.stdout
    assert "Verification: pass (chi2" in offline.stdout


async def test_submit_ai_optimize_from_the_command_line(
    config: Config, bus: Bus, tmp_path: Path
) -> None:
    from tests.test_ai_rewrite import CZ_REWRITE, PROGRAM, STAGES, with_ai

    program = tmp_path / "prog.qasm"
    program.write_text(PROGRAM)
    with FakeOllama(answers=[CZ_REWRITE]) as server:
        async with Pipeline(with_ai(config, server.url), stages=STAGES) as p:
            args = ["submit", str(program), "--ai-optimize", "--wait", "--job-id", "ai-cli-1"]
            out = await asyncio.to_thread(
                subprocess.run,
                [*QBUS, "--url", config.bus.url, *args, "--shots", "50"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            p.check()
    assert out.returncode == 0, out.stderr + out.stdout
    assert "verification: PASS" in out.stdout
    rewritten = [
        e
        async for _, _, e in events_of(bus, "ai-cli-1", timeout=1.0)
        if e.__struct_config__.tag == "circuit.rewritten"
    ]
    assert rewritten[0].ai.verdict == "accepted"
    assert len(server.chats()) == 1
