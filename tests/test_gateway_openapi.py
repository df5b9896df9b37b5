"""The committed OpenAPI document (schemas/openapi.json) is what the gateway generates,
as tests/test_protocol.py checks the AsyncAPI one; and the ``qbus gateway`` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qbus.bus.server import NatsServer
from qbus.gateway.app import openapi_document_text
from qbus.gateway.openapi import REGEN_COMMAND

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "schemas" / "openapi.json"


def test_committed_openapi_document_matches_the_code():
    hint = f"schemas/openapi.json is stale: run `.venv/bin/{REGEN_COMMAND}` and commit it"
    assert COMMITTED.read_text() == openapi_document_text(), hint


def test_openapi_document_names_every_endpoint():
    doc = json.loads(COMMITTED.read_text())
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    expected = {
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/v1/jobs/{job_id}/reroute", "post"),
        ("/v1/results", "get"),
        ("/v1/engines", "get"),
        ("/v1/templates", "get"),
        ("/v1/audit/verify", "get"),
    }
    assert {(p, m) for p, ops in paths.items() for m in ops} >= expected
    assert "text/event-stream" in paths["/v1/results"]["get"]["responses"]["200"]["content"]


def test_openapi_command_writes_the_committed_document(tmp_path: Path):
    out = tmp_path / "openapi.json"
    done = subprocess.run(
        [sys.executable, "-m", "qbus", "gateway", "--openapi", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == COMMITTED.read_text()


@pytest.mark.timeout(90)
def test_gateway_command_serves_and_refuses_a_taken_port(tmp_path: Path):
    with NatsServer(tmp_path / "nats", port=-1) as nats, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-m", "qbus", "--url", nats.url, "gateway", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert refused.returncode != 0
        assert f"127.0.0.1:{port}" in refused.stderr and "in use" in refused.stderr
        # `qbus up --http` checks the port before it starts anything.
        up = subprocess.run(
            [sys.executable, "-m", "qbus", "up", "--port", "-1", "--http", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")},
        )
        assert up.returncode != 0 and f"127.0.0.1:{port}" in up.stderr
        assert "nats-server" not in up.stdout

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "qbus", "--url", nats.url, "gateway", "--port", str(free)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "Uvicorn running on" in line:
                    break
            else:
                pytest.fail("the gateway stopped before it served")
            answer = httpx.get(f"http://127.0.0.1:{free}/v1/templates", timeout=10)
            assert answer.status_code == 200 and answer.json()["templates"]
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.mark.timeout(240)
def test_the_readme_recipe_qbus_up_http_then_curl_streams_a_bell_job(tmp_path: Path):
    # The README's "HTTP API and web console" block, run as written (bash, curl), with a
    # free port in place of 8080 and the endless /v1/results stream cut after 10 s.
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## HTTP API and web console", 1)[1].split("```bash\n", 1)[1]
    block = block.split("```", 1)[0]
    assert "qbus up --http 8080" in block and "/v1/results" in block
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        block.replace("8080", str(port))
        .replace(".venv/bin/qbus up", f"{sys.executable} -m qbus up --port -1 --no-metrics")
        .replace(
            "curl -N -H 'Accept: text/event-stream' -H",
            "timeout 10 curl -N -H 'Accept: text/event-stream' -H",
        )
    )
    assert script.count("timeout 10 curl") == 1, script
    script = f"set -m\n{script}\nkill %1; wait %1\n"
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT,
        env={**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")},
    )
    text = out.stdout
    assert "event: circuit.ingested" in text, text + out.stderr
    assert "event: job.completed" in text, text + out.stderr
    # The job's stream, then the results stream (from the log's start) replays its final.
    assert text.count("event: job.completed") == 2, text
    assert f"console http://127.0.0.1:{port}/console/" in text
