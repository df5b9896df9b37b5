"""Result hash versions: version 2 hashes RFC 8785 canonical JSON, and a log written with
version 1 hashes (before ``hash_version`` existed) still audits and replays clean.

tests/data/hash-v1/log.jsonl holds two jobs (a Bell sample on qiskit-aer, and an
expectation job on the reference engine with values -1.0, 5.0 and 0.5), one event a
line, exactly as qbus wrote them at commit 1a83a5d, the last one with version 1 hashes,
by the real execute and verify handlers. It is a record of the past: never regenerate it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.subjects import Subjects
from qbus.schemas.audit import event_digest
from qbus.schemas.events import JobCompleted, decode
from qbus.verifier.audit_checks import LogChecker
from qbus.verifier.hashing import HASH_VERSION, event_result_hash, result_hash
from tests.test_audit_checks import check, real_log
from tests.test_audit_verify import qbus_cli

pytestmark = pytest.mark.timeout(120)

SUBJECTS = Subjects("qbus")
V1_LOG = Path(__file__).parent / "data" / "hash-v1" / "log.jsonl"

# One result with floats that JSON.stringify writes differently from msgspec (5.0, 1e21)
# and a seed past 2**53, hashed by hand below as each version encodes it.
FLOATY = dict(
    circuit_hash="sha256:" + "ab" * 32,
    engine="reference",
    engine_version="1",
    method="expectation",
    shots=1024,
    seed=2**63 - 1,
    expectations=[-1.0, 5.0, 0.5, 1e21],
)
V1_TEXT = (
    b'{"v":1,"circuit_hash":"sha256:' + b"ab" * 32 + b'","engine":"reference",'
    b'"engine_version":"1","method":"expectation","shots":1024,"seed":9223372036854775807,'
    b'"counts":null,"statevector":null,"statevector_ref":null,'
    b'"expectations":[-1.0,5.0,0.5,1e21]}'
)
# RFC 8785: keys sorted, numbers as JavaScript writes them (the seed as its double).
V2_TEXT = (
    b'{"circuit_hash":"sha256:' + b"ab" * 32 + b'","counts":null,"engine":"reference",'
    b'"engine_version":"1","expectations":[-1,5,0.5,1e+21],"method":"expectation",'
    b'"seed":9223372036854776000,"shots":1024,"statevector":null,'
    b'"statevector_ref":null,"v":2}'
)


def _sha(text: bytes) -> str:
    return "sha256:" + hashlib.sha256(text).hexdigest()


def v1_lines() -> list[bytes]:
    return V1_LOG.read_bytes().splitlines()


def audit(lines: list[bytes]) -> LogChecker:
    checker = LogChecker(SUBJECTS)
    for seq, line in enumerate(lines, 1):
        event = decode(line)
        subject = SUBJECTS.for_event(event)
        checker.feed(
            seq, subject, event.event_id, line, event_digest(subject, event.event_id, line)
        )
    checker.finish()
    return checker


def edited_final(lines: list[bytes], job_id: str, **changes: object) -> list[bytes]:
    """The log with one job's JobCompleted JSON fields replaced (its hash left as is)."""
    out = []
    for line in lines:
        raw = json.loads(line)
        if raw["type"] == "job.completed" and raw["job_id"] == job_id:
            line = json.dumps({**raw, **changes}).encode()
        out.append(line)
    return out


def test_each_version_hashes_its_own_encoding_of_the_document():
    assert result_hash(**FLOATY, version=1) == _sha(V1_TEXT)
    assert result_hash(**FLOATY, version=2) == _sha(V2_TEXT) == result_hash(**FLOATY)
    assert HASH_VERSION == 2
    with pytest.raises(ValueError, match="unknown result hash version 3"):
        result_hash(**FLOATY, version=3)


def test_a_log_written_with_version_1_hashes_still_audits_clean():
    lines = v1_lines()
    assert b"hash_version" not in V1_LOG.read_bytes()  # written before the field existed
    finals = [e for e in map(decode, lines) if isinstance(e, JobCompleted)]
    assert [(f.job_id, f.hash_version) for f in finals] == [
        ("v1-sample", 1),
        ("v1-expectation", 1),
    ]
    assert finals[1].expectations == [-1.0, 5.0, 0.5]
    for final in finals:
        assert event_result_hash(final) == final.result_hash != event_result_hash(final, 2)
    checker = audit(lines)
    assert checker.problems == []
    assert checker.results_checked == 2


def test_a_changed_version_1_result_is_still_caught():
    lines = edited_final(v1_lines(), "v1-expectation", expectations=[-1.0, 5.0, 0.25])
    checks = sorted((p.check, p.job_id) for p in audit(lines).problems)
    assert checks == [("result_hash", "v1-expectation"), ("result_mismatch", "v1-expectation")]


def test_relabelling_a_version_1_hash_as_version_2_is_caught():
    lines = edited_final(v1_lines(), "v1-sample", hash_version=2)
    checks = sorted((p.check, p.job_id) for p in audit(lines).problems)
    assert checks == [("result_hash", "v1-sample"), ("result_mismatch", "v1-sample")]


def test_an_unknown_hash_version_is_named_not_a_crash():
    lines = edited_final(v1_lines(), "v1-sample", hash_version=3)
    (problem,) = audit(lines).problems
    assert problem.check == "result_hash" and "version 3" in problem.message


async def test_a_fresh_job_gets_a_version_2_hash_that_audits_clean():
    events = await real_log("fresh")
    final = events[-1]
    assert isinstance(final, JobCompleted) and final.hash_version == HASH_VERSION == 2
    assert final.result_hash == event_result_hash(final, 2) != event_result_hash(final, 1)
    assert b'"hash_version":2' in msgspec.json.encode(final)
    checker = check(events)
    assert checker.problems == [] and checker.results_checked == 1


async def test_a_version_1_job_replays_against_its_version_1_hash(bus: Bus, config: Config):
    for line in v1_lines():
        event = decode(line)
        await bus.js.publish(
            SUBJECTS.for_event(event), line, headers={"Nats-Msg-Id": event.event_id}
        )
    out = await asyncio.to_thread(qbus_cli, "audit", "replay", "v1-expectation", url=config.bus.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("replay MATCH: job v1-expectation")
    published = decode(v1_lines()[-1])
    assert isinstance(published, JobCompleted)
    assert published.result_hash[7:23] in out.stdout
