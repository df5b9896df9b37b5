"""Fuzz: thousands of malformed, hostile and mutated submissions against real stage processes.

Every stage runs as its own process (as ``qbus up`` runs them), so a crash is a process
that died and a traceback is a line in its log. The inputs are built by a seeded
generator of our own: valid submissions (OpenQASM 2/3, JSON IR, Quil) mutated field by
field (wrong types, hostile values, deep nesting, other event types, unknown fields),
their program text mutated (garbage, huge numbers, deep parentheses, truncation), the
JSON bytes corrupted, and some sent to a submit subject no tenant owns. A valid canary
job goes in every 100 inputs.

Asserted: no stage process died, no stage log holds a traceback, every input got an
answer a sender can find (its job's final event, or a refusal keyed by its message id)
within 30 s of the last publish, every canary completed, and ``qbus audit verify``
runs over the whole log to the end.

CI runs 2,000 inputs; ``QBUS_FUZZ_INPUTS=10000`` is the long form (by hand), and
``QBUS_FUZZ_SEED`` picks another input set (the seed is printed on failure).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js import api as js_api

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.producers.submit import wait_final
from qbus.schemas.events import FINAL_EVENTS, JobCompleted, JobRejected, decode
from qbus.supervisor import Supervisor
from qbus.verifier.log_audit import verify_log
from tests.conftest import config_toml
from tests.jobs import BELL_IR, QASM2_BELL, QASM3_GHZ

INPUTS = int(os.environ.get("QBUS_FUZZ_INPUTS", "2000"))
SEED = int(os.environ.get("QBUS_FUZZ_SEED", "20261207"))
ANSWER_WITHIN = 30.0  # seconds after the last publish

pytestmark = pytest.mark.timeout(600 + INPUTS // 10)

JSON_IR = json.dumps(BELL_IR)
QUIL_BELL = "DECLARE ro BIT[2]\nH 0\nCNOT 0 1\nMEASURE 0 ro[0]\nMEASURE 1 ro[1]\n"
SOURCES = [(QASM2_BELL, "qasm2"), (QASM3_GHZ, "qasm3"), (JSON_IR, "json"), (QUIL_BELL, "quil")]


def _deep(depth: int) -> str:
    # A marker, replaced by the nested text after json.dumps (which recurses per level).
    return f"__deep_{depth}__"


def _splice_deep(payload: str) -> str:
    for depth in (70, 1000):
        payload = payload.replace(f'"{_deep(depth)}"', "[" * depth + "1" + "]" * depth)
    return payload


HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**70,
    -(2**64),
    1e308,
    -1e308,
    "",
    "x" * 5000,
    "\u0000\u202e\ud7ff",
    [],
    {},
    [1, "two", None],
    {"a": {"b": {"c": "d"}}},
    "NaN",
    "9" * 5000,
]

FIELDS = [
    "type",
    "event_id",
    "job_id",
    "source",
    "format",
    "circuit",
    "shots",
    "seed",
    "method",
    "priority",
    "hypervisor",
    "engine",
    "labels",
    "parameters",
    "memory_mb",
    "cpu_seconds",
    "wall_seconds",
    "observables",
    "sweep",
    "optimize",
    "timestamp",
    "producer",
]

OTHER_TYPES: list[Any] = [
    "job.failed",
    "job.completed",
    "control.cancel",
    "execution.requested",
    "job.submitted.v9",
    5,
    ["job.submitted"],
    None,
]


def _mutate_source(rng: random.Random, text: str) -> str:
    choice = rng.randrange(9)
    if choice == 0:  # garbage somewhere
        at = rng.randrange(len(text) + 1)
        junk = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 40)))
        return text[:at] + junk + text[at:]
    if choice == 1:  # truncated
        return text[: rng.randrange(len(text))]
    if choice == 2:  # a huge number where a size or index goes
        return text.replace("[2]", "[" + "9" * rng.choice([40, 5000]) + "]", 1)
    if choice == 3:  # deep parentheses in an angle
        depth = rng.choice([100, 3000, 30000])
        return text + "rx(" + "(" * depth + "1" + ")" * depth + ") q[0];\n"
    if choice == 4:  # an unknown gate
        return text + "frobnicate q[0];\n"
    if choice == 5:  # an index out of range
        return text.replace("q[1]", "q[" + str(rng.choice([7, 100, -1])) + "]", 1)
    if choice == 6:  # an absurd angle
        return text + f"rz({rng.choice(['1e308', '-1e308', 'inf', 'nan', 'pi/0'])}) q[0];\n"
    if choice == 7:  # lines shuffled
        lines = text.splitlines()
        rng.shuffle(lines)
        return "\n".join(lines)
    return text * rng.choice([2, 50])  # repeated


def _input(rng: random.Random, i: int) -> tuple[str, bytes, str, str | None]:
    """(subject kind, payload, message id, the job id a sender would look up)."""
    source, fmt = rng.choice(SOURCES)
    doc: dict[str, Any] = {
        "type": "job.submitted",
        "event_id": f"fz-e{i}",
        "job_id": f"fz-j{i}",
        "producer": "fuzz",
        "source": source,
        "format": rng.choice([fmt, "auto"]),
        "shots": rng.choice([1, 10, 100]),
    }
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(6)
        field = rng.choice(FIELDS)
        if kind == 0:
            doc.pop(field, None)
        elif kind == 1:
            value = rng.choice(HOSTILE_VALUES)
            if field in ("job_id", "event_id") and isinstance(value, str) and value:
                value = f"{value}{i}"  # hostile but unique: one sender per job id
            doc[field] = value
        elif kind == 2:
            doc[field if rng.random() < 0.5 else f"extra{i}"] = _deep(rng.choice([70, 1000]))
        elif kind == 3:
            doc["type"] = rng.choice(OTHER_TYPES)
        elif kind == 4 and isinstance(doc.get("source"), str):
            doc["source"] = _mutate_source(rng, doc["source"])
        else:
            doc[rng.choice(["memory_mb", "wall_seconds", "cpu_seconds"])] = rng.choice(
                [0, -5, 0.001]
            )
    payload = _splice_deep(json.dumps(doc)).encode()
    if rng.random() < 0.15:  # corrupted bytes
        raw = bytearray(payload)
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        payload = bytes(raw)
    subject = "odd" if rng.random() < 0.03 else "submit"
    # The job id a sender looks its answer up by: the top-level one, read from the text
    # (the generator writes it first, before anything deep).
    found = re.search(rb'"job_id": "([^"\\]*)"', payload)
    job_id = found.group(1).decode(errors="replace") if found else None
    return subject, payload, f"fz-m{i}", job_id


def _canary(k: int) -> tuple[str, bytes, str, str]:
    doc = {
        "type": "job.submitted",
        "event_id": f"canary-e{k}",
        "job_id": f"canary-{k}",
        "producer": "fuzz",
        "source": QASM2_BELL,
        "shots": 100,
    }
    return "submit", json.dumps(doc).encode(), f"canary-m{k}", f"canary-{k}"


async def _answers(bus: Bus) -> tuple[dict[str, list[Any]], set[str]]:
    """Final events by job id, and the refusal keys, from the whole log."""
    subjects = bus.subjects
    # How many there are, counted by the server: a consumer's num_pending can read 0
    # before the end when it filters on several subjects.
    expected = 0
    for subject in (subjects.result(), subjects.refused()):
        info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
        expected += sum((info.state.subjects or {}).values())
    sub = await bus.js.subscribe(
        subjects.result(),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=[subjects.result(), subjects.refused()]),
        pending_msgs_limit=1_000_000,
    )
    finals: dict[str, list[Any]] = {}
    refused: set[str] = set()
    read = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except TimeoutError:
                break
            event = decode(msg.data)
            if isinstance(event, JobRejected) and event.refusal is not None:
                refused.add(event.refusal)
            elif isinstance(event, FINAL_EVENTS):
                finals.setdefault(event.job_id, []).append(event)
            read += 1
            if read >= expected:
                break
    finally:
        await sub.unsubscribe()
    return finals, refused


async def _drained(bus: Bus) -> bool:
    """Nothing waits in, or is being handled by, any stage's consumer."""
    for info in await bus.js.consumers_info(bus.config.stream):
        if info.num_pending or info.num_ack_pending:
            return False
    return True


def _fuzz_config(config: Config, tmp_path: Path) -> Path:
    # Tight job limits: a mutation may turn a register size into 29 and make a valid
    # job; here it is refused at ingest instead of filling this machine's memory.
    path = tmp_path / "qbus.toml"
    path.write_text(
        config_toml(config)
        + "[limits]\nmax_qubits = 12\nmax_statevector_qubits = 12\nmax_shots = 100000\n"
        + "max_sweep_points = 100\nmax_ops = 5000\n"
    )
    return path


async def test_fuzzed_submissions_never_crash_a_stage_and_all_get_an_answer(
    config: Config, bus: Bus, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    sup = Supervisor(
        config.bus.url,
        tmp_path / "logs",
        extra_env={"QBUS_CONFIG": str(_fuzz_config(config, tmp_path))},
    )
    await bus.ensure_executor("qiskit-aer")
    sup.start()
    inputs: list[tuple[str, bytes, str, str | None]] = []
    canaries: list[str] = []
    try:
        # Every stage up and consuming before the flood: one job through the pipeline.
        warm = _canary(-1)
        await bus.js.publish(bus.subjects.submit, warm[1], headers={"Nats-Msg-Id": warm[2]})
        assert isinstance(await wait_final(bus, warm[3], 120), JobCompleted)
        for i in range(INPUTS):
            if i % 100 == 0:
                canary = _canary(i // 100)
                inputs.append(canary)
                canaries.append(canary[3])
            inputs.append(_input(rng, i))
        for kind, payload, msg_id, _ in inputs:
            subject = bus.subjects.submit if kind == "submit" else f"{bus.subjects.submit}.a.b"
            await bus.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        published = time.monotonic()
        while time.monotonic() - published < ANSWER_WITHIN:
            sup.poll()
            if await _drained(bus):
                break
            await asyncio.sleep(0.25)
        drained_after = time.monotonic() - published
        finals, refused = await _answers(bus)
        # The audit reads the whole log to its end, hostile payloads included, once the
        # audit stage has chained it.
        deadline = time.monotonic() + 60
        while True:
            report = await verify_log(bus)
            if report.unaudited == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        stored = (await bus.js.stream_info(bus.config.stream)).state.messages
        restarts = {p.name: p.restarts for p in sup.processes if p.restarts}
        dead = [p.name for p in sup.processes if p.proc is None or p.proc.poll() is not None]
    finally:
        sup.stop()
    context = f"(seed {SEED}, {len(inputs)} inputs)"
    # The long form's figures (run with -s): how long the bus took to answer everything.
    print(f"fuzz {context}: drained {drained_after:.1f} s after the last publish")
    assert not restarts and not dead, f"stage processes died: {restarts} {dead} {context}"
    tracebacks = {
        log.name: log.read_text().count("Traceback")
        for log in (tmp_path / "logs").glob("*.log")
        if "Traceback" in log.read_text()
    }
    assert not tracebacks, f"tracebacks in stage logs: {tracebacks} {context}"
    assert drained_after < ANSWER_WITHIN, f"still busy {drained_after:.1f} s after {context}"
    unanswered = [
        (msg_id, payload[:120])
        for _, payload, msg_id, job_id in inputs
        if msg_id not in refused and not (job_id and finals.get(job_id))
    ]
    assert not unanswered, (
        f"{len(unanswered)} inputs got no answer, e.g. {unanswered[:3]} {context}"
    )
    twice = {job: len(events) for job, events in finals.items() if len(events) > 1}
    assert not twice, f"jobs with more than one final event: {twice} {context}"
    for canary in canaries:
        (final,) = finals[canary]
        assert isinstance(final, JobCompleted), (canary, final)
    assert report.events == stored and report.unaudited == 0, msgspec.json.encode(report)[:600]
