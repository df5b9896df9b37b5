"""The AI assistant's client and checks, against a local server speaking Ollama's API.

``tests/ollama_server.py`` is a test double (no LLM can run here) that speaks the real
wire protocol: the official ``ollama`` client talks to it over HTTP, streamed NDJSON and
single JSON replies alike.
"""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest

from qbus.ai.assistant import circuit_from_text, explain_job, plan_template, summarise_events
from qbus.ai.client import OllamaClient
from qbus.ai.draw import _draw, draw_text
from qbus.ai.errors import AiAnswerError, AiModelMissing, AiUnavailable
from qbus.ai.extract import extract_qasm, extract_yaml
from qbus.ai.prompting import load_prompt
from qbus.bus.config import AiConfig, ConfigError
from qbus.errors import SchemaError
from qbus.frontends.job_template import template_json_schema, validate_template
from qbus.frontends.qasm import parse_qasm
from qbus.secrets import load_config
from tests.ollama_server import DIGEST, FakeOllama

GHZ5 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[5] q;
bit[5] c;
h q[0];
cx q[0], q[1];
cx q[1], q[2];
cx q[2], q[3];
cx q[3], q[4];
c = measure q;
"""

# Recorded-style answers: what a code model typically sends back, fence and chatter included.
GHZ5_ANSWER = f"Here is the circuit:\n\n```qasm\n{GHZ5}```\n"
GHZ5_WRONG_GATE = "```qasm\n" + GHZ5.replace("h q[0];", "hadamard q[0];") + "```"
GHZ5_OUT_OF_RANGE = "```openqasm\n" + GHZ5.replace("cx q[3], q[4];", "cx q[3], q[5];") + "```"

H2_PLAN = """```yaml
name: h2-vqe
description: Ground state of H2 at 0.74 Å (STO-3G, parity mapping, 2 qubits) by VQE.
on_job:
  backend: auto
  method: expectation
  hypervisor: auto
  ai_optimize: true
ansatz:
  kind: hardware_efficient
  qubits: 2
  layers: 2
hamiltonian:
  - {pauli: "II", coeff: -1.052373245772859}
  - {pauli: "IZ", coeff: 0.39793742484318045}
  - {pauli: "ZI", coeff: -0.39793742484318045}
  - {pauli: "ZZ", coeff: -0.01128010425623538}
  - {pauli: "XX", coeff: 0.18093119978423156}
optimizer:
  method: COBYLA
  maxiter: 200
```"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cfg(server: FakeOllama | None = None, **kw: object) -> AiConfig:
    host = server.url if server else f"http://127.0.0.1:{free_port()}"
    return AiConfig(host=host, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [True, False])
async def test_chat_and_generate_streamed_and_not(stream: bool) -> None:
    text = "A longer answer, so that the stream has several pieces: " * 3
    with FakeOllama(answers=[text, text]) as server:
        async with OllamaClient(cfg(server, stream=stream)) as client:
            chat = await client.chat([{"role": "user", "content": "hi"}], prompt_version="t@1")
            gen = await client.generate("hi", system="be brief", prompt_version="t@1")
    assert chat.text == text and gen.text == text
    assert chat.model == "qwen2.5-coder:7b" and chat.model_digest == DIGEST
    assert chat.prompt_version == "t@1"
    paths = [path for path, _ in server.requests]
    # The digest comes from /api/tags, read once per client.
    assert paths == ["/api/tags", "/api/chat", "/api/generate"]
    body = server.requests[1][1]
    assert body["stream"] is stream
    assert body["options"] == {"temperature": 0.0, "seed": 0}
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert server.requests[2][1]["system"] == "be brief"


async def test_show_endpoint_speaks_the_real_protocol() -> None:
    # /api/show as the official client parses it (the double must not drift from it).
    import ollama

    with FakeOllama() as server:
        client = ollama.AsyncClient(host=server.url)
        shown = await client.show("qwen2.5-coder:7b")
        assert shown.details.family == "qwen2" and "completion" in shown.capabilities
        with pytest.raises(ollama.ResponseError) as info:
            await client.show("llama3:8b")
        assert info.value.status_code == 404


async def test_no_server_is_unavailable_and_says_how_to_start_one() -> None:
    async with OllamaClient(cfg(None, model="llama3:8b")) as client:
        with pytest.raises(AiUnavailable) as info:
            await client.chat([{"role": "user", "content": "x"}], prompt_version="v")
    assert "ollama serve" in str(info.value) and "ollama pull llama3:8b" in str(info.value)


async def test_missing_model_says_to_pull_it() -> None:
    with FakeOllama(models={"llama3:8b": DIGEST}) as server:
        async with OllamaClient(cfg(server, model="qwen2.5-coder")) as client:
            with pytest.raises(AiModelMissing) as info:
                await client.model_info()
    assert "ollama pull qwen2.5-coder" in str(info.value) and "llama3:8b" in str(info.value)


async def test_a_slow_server_times_out_as_unavailable() -> None:
    with FakeOllama(answers=["late"], delay=2.0) as server:
        async with OllamaClient(cfg(server, timeout=0.3)) as client:
            with pytest.raises(AiUnavailable, match=r"did not answer within 0\.3 s"):
                await client.chat([{"role": "user", "content": "x"}], prompt_version="v")


async def test_invalid_qasm_is_retried_with_the_parser_error_and_fixed() -> None:
    with FakeOllama(answers=[GHZ5_WRONG_GATE, GHZ5_OUT_OF_RANGE, GHZ5_ANSWER]) as server:
        async with OllamaClient(cfg(server)) as client:
            answer, circuit = await circuit_from_text(
                client, "prepare a 5-qubit GHZ state and measure all", max_retries=2
            )
    assert answer.attempts == 3
    assert circuit == parse_qasm(GHZ5)[0]
    chats = server.chats()
    assert len(chats) == 3
    # Each retry carries the whole conversation and the parser's exact complaint.
    second, third = chats[1]["messages"], chats[2]["messages"]
    assert second[-2] == {"role": "assistant", "content": GHZ5_WRONG_GATE}
    assert "[unknown_gate]" in second[-1]["content"] and "line 5, column 1" in second[-1]["content"]
    assert "did you mean 'h'" in second[-1]["content"]
    assert "[qubit_out_of_range]" in third[-1]["content"]
    assert answer.reply.prompt_version == load_prompt("qasm").version
    # The first message is the versioned system prompt, then the few-shot turns.
    assert chats[0]["messages"][0]["content"] == load_prompt("qasm").system
    assert chats[0]["messages"][-1]["content"] == "prepare a 5-qubit GHZ state and measure all"


async def test_invalid_answers_to_the_end_fail_naming_the_last_error() -> None:
    with FakeOllama(answers=[GHZ5_WRONG_GATE, "I cannot do that."]) as server:
        async with OllamaClient(cfg(server)) as client:
            with pytest.raises(AiAnswerError) as info:
                await circuit_from_text(client, "ghz", max_retries=1)
    assert info.value.attempts == 2
    assert "no OpenQASM 3 program found" in info.value.last_error
    assert "last error: no OpenQASM 3 program found" in str(info.value)


async def test_plan_is_validated_against_the_template_schema() -> None:
    bad = H2_PLAN.replace("  layers: 2\n", "  layers: 2\n  depth: 4\n")
    with FakeOllama(answers=[bad, H2_PLAN]) as server:
        async with OllamaClient(cfg(server)) as client:
            answer, template = await plan_template(
                client, "ground state of H2 at 0.74 Å", max_retries=1
            )
    assert answer.attempts == 2
    assert "depth" in answer.errors[0] and "$.ansatz" in answer.errors[0]
    assert template.ansatz.qubits == 2 and len(template.hamiltonian) == 5
    assert template.on_job.method == "expectation" and template.on_job.ai_optimize


def test_template_schema_refuses_what_cannot_run() -> None:
    body = extract_yaml(H2_PLAN)
    assert body is not None
    validate_template(body)
    cases = {
        "different lengths": body.replace('"XX"', '"XXI"'),
        "acts on 2 qubits, the ansatz on 3": body.replace("qubits: 2", "qubits: 3"),
        "must be one of": body.replace("method: COBYLA", "method: Adam"),
        "exactly one of": body + "circuit: 'OPENQASM 3.0; qubit[1] q;'\n",
        "not valid YAML": "name: [unclosed",
    }
    for needle, text in cases.items():
        with pytest.raises(SchemaError, match=needle):
            validate_template(text)
    with_circuit = "name: bell\ncircuit: |\n  OPENQASM 3.0;\n  qubit[2] q;\n  hadamard q[0];\n"
    with pytest.raises(Exception, match="unknown gate 'hadamard'"):
        validate_template(with_circuit)
    assert "on_job" in msgspec.json.encode(template_json_schema()).decode()


def test_extract_qasm_from_the_ways_models_answer() -> None:
    assert extract_qasm(GHZ5_ANSWER) == GHZ5
    assert extract_qasm("```\n" + GHZ5 + "```") == GHZ5  # unlabelled fence
    assert extract_qasm("Sure! " + GHZ5) == GHZ5  # no fence at all
    assert extract_qasm("```python\nprint(1)\n```") is None
    assert extract_qasm("no program here") is None


def test_prompts_are_versioned_files_in_the_package() -> None:
    for name in ("qasm", "rewrite", "explain", "plan"):
        prompt = load_prompt(name)
        number, _, digest = prompt.version.removeprefix(f"{name}@").partition("+")
        assert number.isdigit() and len(digest) == 8
        assert prompt.system
    # Few-shot answers in the prompts are themselves valid programs / templates.
    for name in ("qasm", "rewrite"):
        for role, content in load_prompt(name).examples:
            if role == "assistant":
                program = extract_qasm(content)
                assert program is not None
                parse_qasm(program)
    plan_example = next(c for r, c in load_prompt("plan").examples if r == "assistant")
    validate_template(extract_yaml(plan_example) or "")


def test_ai_config_section(tmp_path: Path) -> None:
    config = load_config(env={"QBUS_AI_HOST": "http://gpu-box:11434", "QBUS_AI_MODEL": "llama3"})
    assert config.ai.host == "http://gpu-box:11434" and config.ai.model == "llama3"
    assert load_config(env={}).ai.host == "http://127.0.0.1:11434"
    toml = tmp_path / "qbus.toml"
    toml.write_text("[ai]\nmodel = 'llama3.1:8b'\ntimeout = 5\nmax_retries = 4\n")
    ai = load_config(toml, env={}).ai
    assert (ai.model, ai.timeout, ai.max_retries, ai.enabled) == ("llama3.1:8b", 5.0, 4, True)
    toml.write_text("[ai]\ntimeout = 0\n")
    with pytest.raises(ConfigError, match="timeout must be positive"):
        load_config(toml, env={})
    toml.write_text("[ai]\ntemperature = 0.2\n")
    with pytest.raises(ConfigError, match="temperature"):
        load_config(toml, env={})


def test_drawing_shows_every_qubit_and_gate() -> None:
    circuit = parse_qasm(GHZ5)[0]
    ours = _draw(circuit)
    rows = ours.splitlines()
    assert len(rows) == 5 and rows[0].startswith("q0:")
    assert "H" in rows[0] and "■" in rows[0] and "X" in rows[4] and "M→c4" in rows[4]
    assert "q_4" in draw_text(circuit) or "q4" in draw_text(circuit)


async def test_explain_uses_generate_and_the_deterministic_summary_reads_events() -> None:
    from qbus.schemas.events import JobSubmitted

    events = [JobSubmitted(event_id="e1", job_id="j1", producer="cli", source=GHZ5, shots=100)]
    summary = summarise_events(events)
    assert "method sample, 100 shots" in summary
    with FakeOllama(answers=["The job ran a GHZ circuit."]) as server:
        async with OllamaClient(cfg(server)) as client:
            reply = await explain_job(client, events)
    assert reply.text == "The job ran a GHZ circuit."
    path, body = server.requests[-1]
    assert path == "/api/generate" and body["system"] == load_prompt("explain").system
    assert '"job_id": "j1"' in body["prompt"] and "OPENQASM" not in body["prompt"]
