"""The Node.js example client (clients/node/, npm ``nats``) against the bus."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline

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
