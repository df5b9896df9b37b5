"""What the assistant asks the model, and how each answer is checked before it is used.

* ``circuit_from_text``: a description → OpenQASM 3 → the ingest parser; an answer that
  does not parse is sent back with the parser's error (line, column, code), up to
  ``max_retries`` times.
* ``plan_template``: a description → YAML → the job-template schema, with the same loop.
* ``explain_job``: a job's events → a plain-language summary; ``summarise_events`` is
  the deterministic summary used without a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from qbus.ai.client import AiReply, OllamaClient
from qbus.ai.errors import AiAnswerError
from qbus.ai.extract import extract_qasm, extract_yaml
from qbus.ai.prompting import load_prompt
from qbus.bus.config import Limits
from qbus.errors import LimitError, QbusError
from qbus.frontends.job_template import validate_template
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.events import (
    CircuitIngested,
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
)
from qbus.schemas.ir import Circuit

T = TypeVar("T")


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A checked answer: the text the model gave, the attempts it took, and its record.

    Attributes:
        text: The extracted program or document (OpenQASM 3 or YAML).
        reply: The model's last reply (model, digest, prompt version).
        attempts: Requests made (1 when the first answer was valid).
        errors: The error of each rejected attempt, in order.
    """

    text: str
    reply: AiReply
    attempts: int
    errors: tuple[str, ...] = ()


def _error_text(exc: QbusError) -> str:
    return f"[{exc.code}] {exc}"


async def ask_until_valid(
    client: OllamaClient,
    messages: list[dict[str, str]],
    *,
    prompt_version: str,
    extract: Callable[[str], str | None],
    validate: Callable[[str], T],
    what: str,
    max_retries: int,
) -> tuple[Answer, T]:
    """Ask, extract, validate; on failure feed the error back and ask again.

    Args:
        client: The model server client.
        messages: The conversation so far (system, few-shot, the request).
        prompt_version: Recorded with the answer.
        extract: Pulls the program out of an answer (None: nothing found).
        validate: Checks it; raises a ``QbusError`` naming what is wrong.
        what: What is asked for, for messages (``an OpenQASM 3 program``).
        max_retries: Further attempts after the first.

    Returns:
        The answer and what ``validate`` returned for it.

    Raises:
        AiAnswerError: Every attempt failed; names the last error.
        AiUnavailable, AiModelMissing: From the client.
    """
    messages = list(messages)
    errors: list[str] = []
    reply: AiReply | None = None
    text: str | None = None
    for attempt in range(1, max_retries + 2):
        reply = await client.chat(messages, prompt_version=prompt_version)
        text = extract(reply.text)
        if text is None:
            error = f"no {what} found in the answer"
        else:
            try:
                value = validate(text)
            except QbusError as exc:
                error = _error_text(exc)
            else:
                return Answer(text=text, reply=reply, attempts=attempt, errors=tuple(errors)), value
        errors.append(error)
        messages.append({"role": "assistant", "content": reply.text})
        messages.append(
            {
                "role": "user",
                "content": f"That is not a valid {what}: {error}. "
                "Reply with the complete corrected version in one fenced block.",
            }
        )
    raise AiAnswerError(
        f"the model gave no valid {what} in {max_retries + 1} attempt(s); last error: {errors[-1]}",
        attempts=max_retries + 1,
        last_error=errors[-1],
        last_answer=text or (reply.text if reply else ""),
        reply=reply,
    )


def qasm_validator(limits: Limits) -> Callable[[str], Circuit]:
    """The ingest parser with the ingest limits, as a ``validate`` for ``ask_until_valid``."""

    def validate(text: str) -> Circuit:
        circuit, _ = parse_qasm(text, max_bytes=limits.max_source_bytes, max_ops=limits.max_ops)
        if circuit.num_qubits > limits.max_qubits:
            raise LimitError(
                f"{circuit.num_qubits} qubits is more than the limit of {limits.max_qubits}",
                code="too_many_qubits",
            )
        return circuit

    return validate


async def circuit_from_text(
    client: OllamaClient, description: str, *, max_retries: int, limits: Limits | None = None
) -> tuple[Answer, Circuit]:
    """Ask the model for the OpenQASM 3 program that ``description`` describes.

    Raises:
        AiAnswerError: No valid program after ``max_retries`` retries.
        AiUnavailable, AiModelMissing: From the client.
    """
    prompt = load_prompt("qasm")
    return await ask_until_valid(
        client,
        prompt.messages(description),
        prompt_version=prompt.version,
        extract=extract_qasm,
        validate=qasm_validator(limits or Limits()),
        what="OpenQASM 3 program",
        max_retries=max_retries,
    )


async def plan_template(
    client: OllamaClient, description: str, *, max_retries: int
) -> tuple[Answer, object]:
    """Ask the model for a YAML job template; validated against the template schema.

    Raises:
        AiAnswerError: No valid template after ``max_retries`` retries.
        AiUnavailable, AiModelMissing: From the client.
    """
    prompt = load_prompt("plan")
    return await ask_until_valid(
        client,
        prompt.messages(description),
        prompt_version=prompt.version,
        extract=extract_yaml,
        validate=validate_template,
        what="YAML job template",
        max_retries=max_retries,
    )


# -- explain ----------------------------------------------------------------------------------


def _compact(event: Event) -> dict:
    data = msgspec.to_builtins(event)
    # The model needs the story, not the payload: drop circuits and big vectors.
    for key in ("circuit", "statevector", "source", "options"):
        data.pop(key, None)
    return data


def events_for_prompt(events: Sequence[Event]) -> str:
    """The job's events as compact JSON lines (circuits and vectors left out)."""
    return "\n".join(json.dumps(_compact(e), sort_keys=True) for e in events)


async def explain_job(client: OllamaClient, events: Sequence[Event]) -> AiReply:
    """Ask the model (``/api/generate``) to summarise a job's events in plain language."""
    prompt = load_prompt("explain")
    return await client.generate(
        events_for_prompt(events), system=prompt.system, prompt_version=prompt.version
    )


def summarise_events(events: Sequence[Event]) -> str:
    """A deterministic plain-language summary of a job's events (no model involved)."""
    lines: list[str] = []
    ingested_at = None
    for e in events:
        match e:
            case JobSubmitted():
                lines.append(
                    f"Submitted by {e.producer or 'an unnamed producer'}: method {e.method}, "
                    f"{e.shots} shots, engine {e.engine}"
                    + (", AI rewrite requested" if e.ai_optimize else "")
                    + "."
                )
            case CircuitIngested():
                s, o = e.stats, e.options
                ingested_at = ingested_at or e.timestamp
                lines.append(
                    f"Ingested as {e.source_format}: {e.circuit.num_qubits} qubits, {s.gates} "
                    f"gates ({s.two_qubit_gates} two-qubit), depth {s.depth}; method "
                    f"{o.method}, {o.shots} shots, engine {o.engine}"
                    + (", AI rewrite requested" if o.ai_optimize else "")
                    + "."
                )
            case CircuitRewritten():
                removed = sum(p.removed for p in e.passes)
                text = (
                    f"Rewrite: {e.before.gates} → {e.after.gates} gates, depth "
                    f"{e.before.depth} → {e.after.depth}"
                    + (f" ({removed} removed by the passes)" if e.passes else " (passes off)")
                )
                if e.ai is not None:
                    text += f"; AI rewrite {e.ai.verdict}"
                    if e.ai.check_detail:
                        text += f" ({e.ai.check}: {e.ai.check_detail})"
                    if e.ai.warning:
                        text += f"; warning: {e.ai.warning}"
                lines.append(text + ".")
            case ExecutionRequested():
                lines.append(
                    f"Routed to {e.engine}"
                    + (f": {e.route_reason}" if e.route_reason else "")
                    + "."
                )
            case ExecutionCompleted():
                lines.append(
                    f"Ran on {e.engine} {e.engine_version} in {e.run_seconds * 1000:.1f} ms"
                    + (f" under the {e.hypervisor} sandbox" if e.hypervisor else "")
                    + "."
                )
            case ExecutionFailed():
                lines.append(f"Execution on {e.engine} failed [{e.code}]: {e.message}.")
            case JobCompleted():
                v = e.verification
                took = f" {e.timestamp - ingested_at:.2f} s after ingest" if ingested_at else ""
                stat = f", statistic {v.statistic:.4g}" if v.statistic is not None else ""
                pval = f", p-value {v.p_value:.3g}" if v.p_value is not None else ""
                lines.append(
                    f"Completed{took}. Verification: {v.verdict} ({v.test}{stat}{pval}). "
                    f"{v.detail}".rstrip()
                )
            case JobFailed():
                lines.append(f"Failed in {e.stage} [{e.code}]: {e.message}.")
            case JobRejected():
                where = f" at {e.where}" if e.where else ""
                lines.append(f"Rejected in {e.stage} [{e.code}]{where}: {e.message}.")
    return "\n".join(lines) if lines else "No events."
