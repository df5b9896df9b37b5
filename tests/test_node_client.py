"""The Node.js example client (clients/node/, npm ``nats``) against the bus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import msgspec
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.dynamics import DynamicsResult
from qbus.schemas.events import (
    JobCompleted,
    Observable,
    PauliTerm,
    SweepPoint,
    Verification,
    encode,
)
from qbus.schemas.noise import NoiseModel
from qbus.verifier.hashing import HASH_VERSION, event_result_hash
from tests.jobs import job, run_jobs

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "node"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: run `bash scripts/setup.sh` (installs it as root)")
    if not (CLIENT / "node_modules" / "nats").is_dir():
        pytest.fail(f"the Node client's packages are missing: run `npm ci --prefix {CLIENT}`")
    return node


async def run_client(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=CLIENT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_node_client_job_completes_and_its_result_matches_the_schema(
    config: Config, bus: Bus, pipeline: Pipeline
):
    node = _node()
    code, out, err = await run_client(
        node, "submit.mjs", "--url", config.bus.url, "--shots", "500", "--timeout", "60"
    )
    assert code == 0, (out, err)
    result = json.loads(out.strip().splitlines()[-1])
    schema = json.loads((ROOT / "schemas" / "job.completed.json").read_text())
    jsonschema.validate(result, schema)
    assert result["type"] == "job.completed" and sum(result["counts"].values()) == 500
    assert set(result["counts"]) <= {"00", "11"}
    # The job came in with the client's headers: its msg id and a W3C traceparent.
    submitted = await bus.js.get_last_msg(config.bus.stream, bus.subjects.submit)
    assert json.loads(submitted.data)["job_id"] == result["job_id"]
    assert submitted.headers["Nats-Msg-Id"] == json.loads(submitted.data)["event_id"]
    assert submitted.headers["traceparent"] in err


async def test_node_client_exits_nonzero_on_a_rejected_job(
    config: Config, pipeline: Pipeline, tmp_path: Path
):
    node = _node()
    bad = tmp_path / "bad.qasm"
    bad.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nhadamard q[0];\n')
    code, out, _ = await run_client(node, "submit.mjs", "--url", config.bus.url, "--file", str(bad))
    assert code == 1
    result = json.loads(out.strip().splitlines()[-1])
    jsonschema.validate(result, json.loads((ROOT / "schemas" / "job.rejected.json").read_text()))
    assert result["code"] == "unknown_gate"


def node_result_hash(node: str, event: JobCompleted) -> tuple[int, str]:
    """clients/node/result_hash.mjs on the event's wire JSON: (exit status, its hash)."""
    out = subprocess.run(
        [node, "result_hash.mjs"],
        cwd=CLIENT,
        input=encode(event),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr.decode()
    return out.returncode, out.stdout.decode().strip()


def completed(**fields: object) -> JobCompleted:
    base: dict[str, object] = dict(
        event_id="e1",
        job_id="j1",
        engine="reference",
        engine_version="1",
        circuit_hash="sha256:" + "ab" * 32,
        method="expectation",
        shots=1024,
        seed=7,
        verification=Verification(verdict="pass"),
        result_hash="",
        hash_version=HASH_VERSION,
    )
    event = JobCompleted(**{**base, **fields})  # type: ignore[arg-type]
    return msgspec.structs.replace(event, result_hash=event_result_hash(event))


# Floats msgspec writes unlike JSON.stringify (5.0, 1.0, -0.0, 1e21, 1e-7), and a seed
# past 2**53 that JSON.parse reads as a double: the RFC 8785 form must agree anyway.
FLOATY = [
    completed(expectations=[0.5, 1.0, 5.0, -0.0, 1e21, 1e-7, -1.0 / 3]),
    completed(expectations=[5.0], seed=2**63 - 1, noise=NoiseModel(depolarizing_1q=0.25)),
    completed(method="dynamics", dynamics=DynamicsResult(times=[0.0, 0.5, 1.0], values=[[1.0]])),
    completed(
        method="sweep",
        sweep_results=[SweepPoint(expectations=[2.0]), SweepPoint(counts={"1": 3, "0": 5})],
    ),
    completed(method="statevector", statevector=[0.5**0.5, 0.0, 0.0, -(0.5**0.5)]),
    completed(method="sample", counts={"11": 48, "00": 52}),
]


@pytest.mark.parametrize("event", FLOATY, ids=lambda e: e.method)
def test_node_recomputes_the_result_hash_of_float_bearing_results(event: JobCompleted):
    code, recomputed = node_result_hash(_node(), event)
    assert (code, recomputed) == (0, event.result_hash)
    # A changed value is a different hash in Node too.
    forged = msgspec.structs.replace(event, shots=event.shots + 1)
    assert node_result_hash(_node(), forged) == (1, event_result_hash(forged))


async def test_node_recomputes_a_real_expectation_job_hash(bus: Bus, pipeline: Pipeline):
    node = _node()
    observables = [
        Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0")]),
        Observable(terms=[PauliTerm(coeff=5.0)]),
        Observable(terms=[PauliTerm(coeff=0.5, pauli="Z1")]),
    ]
    flip = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nx q[0];\n'
    (final,) = await run_jobs(bus, [job(flip, method="expectation", observables=observables)])
    assert isinstance(final, JobCompleted) and final.hash_version == 2
    assert final.expectations == pytest.approx([-1.0, 5.0, 0.5])
    # Integer-valued floats on the wire (msgspec writes 5.0, JSON.stringify writes 5).
    assert b"5.0" in encode(final).split(b'"expectations":')[1].split(b"]")[0]
    assert node_result_hash(node, final) == (0, final.result_hash)
