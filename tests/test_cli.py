"""The qbus command line, run as a user would run it (separate processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from tests.jobs import QASM2_BELL

pytestmark = pytest.mark.timeout(180)


def qbus(*args: str, url: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "qbus"]
    if url:
        cmd += ["--url", url]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_ends_with_a_verified_bell_result_and_a_clean_audit():
    out = qbus("demo", "--shots", "500")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "verification: PASS" in out.stdout
    assert "audit: OK" in out.stdout
    counts = [line.split() for line in out.stdout.splitlines() if line[:2] in ("00", "11")]
    assert {row[0] for row in counts} == {"00", "11"}
    assert sum(int(row[1]) for row in counts) == 500


async def aqbus(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    """``qbus`` from an async test: the in-process stages must keep running meanwhile."""
    return await asyncio.to_thread(qbus, *args, url=url)


async def test_submit_wait_status_and_audit(
    config: Config, bus: Bus, pipeline: Pipeline, tmp_path: Path
):
    url = config.bus.url
    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    out = await aqbus(
        "submit",
        str(program),
        "--shots",
        "300",
        "--seed",
        "3",
        "--job-id",
        "cli-1",
        "--wait",
        url=url,
    )
    assert out.returncode == 0, out.stderr
    assert "verification: PASS" in out.stdout and "result hash: sha256:" in out.stdout

    # A program that does not parse is refused by the CLI itself (tests/test_cli_errors.py);
    # what only the bus can judge (which engines it runs) comes back as a rejection.
    out = await aqbus(
        "submit",
        str(program),
        "--engine",
        "no-such-engine",
        "--job-id",
        "cli-2",
        "--wait",
        url=url,
    )
    assert out.returncode == 1
    assert "cli-2: REJECTED [unknown_engine]" in out.stderr, out.stderr

    out = await aqbus("status", "cli-1", url=url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("job cli-1: completed")
    assert [ln.split()[2] for ln in out.stdout.splitlines()[1:]] == [
        "circuit.ingested",
        "circuit.rewritten",
        "execution.requested",
        "execution.completed",
        "job.completed",
    ]
    out = await aqbus("status", "never-submitted", url=url)
    assert out.returncode == 1 and "not known" in out.stderr

    last = (await bus.js.stream_info(config.bus.stream)).state.last_seq
    await pipeline.stages["audit"].flushed_to(last)
    out = await aqbus("audit", "verify", url=url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("audit OK")


def test_schema_and_engines_commands(tmp_path: Path):
    out = qbus("schema", "--out", str(tmp_path))
    assert out.returncode == 0
    schema = json.loads((tmp_path / "job.submitted.json").read_text())
    assert schema["title"] == "job.submitted" and "shots" in schema["properties"]
    assert json.loads((tmp_path / "asyncapi.json").read_text())["asyncapi"].startswith("3.")
    out = qbus("schema", "--asyncapi")
    assert out.returncode == 0
    assert json.loads(out.stdout)["channels"]["result"]["address"] == "qbus.result.{job}"
    out = qbus("engines")
    assert out.returncode == 0
    assert any(line.startswith("qiskit-aer") and "True" in line for line in out.stdout.splitlines())


def _start_up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`qbus up` with its state in ``tmp_path``, and what it printed up to its ready line."""
    import os

    env = {**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")}
    up = subprocess.Popen(
        [sys.executable, "-m", "qbus", "up", "--port", "-1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    while not any(ln.startswith("logs in") for ln in lines):
        line = up.stdout.readline()
        if not line:
            up.kill()
            raise AssertionError("qbus up exited early:\n" + "".join(lines))
        lines.append(line)
    return up, lines


def _all_gone(pids: list[int]) -> bool:
    return all(
        not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        for pid in pids
    )


def test_up_runs_every_stage_and_ctrl_c_stops_them_all(tmp_path: Path):
    import os
    import re
    import signal

    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    up, lines = _start_up(tmp_path)
    watch = None
    try:
        url = re.search(r"nats://[\d.]+:\d+", lines[0]).group(0)
        pids = [int(m) for m in re.findall(r"pid (\d+)", "".join(lines[1:]))]
        assert len(pids) == 7  # ingest rewrite route execute verify audit control
        watch = subprocess.Popen(
            [sys.executable, "-m", "qbus", "--url", url, "watch", "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        out = qbus("submit", str(program), "--job-id", "up-1", "--wait", url=url)
        assert out.returncode == 0, out.stderr
        assert "verification: PASS" in out.stdout
        event = json.loads(watch.stdout.readline())
        assert event["type"] == "job.completed" and event["job_id"] == "up-1"
        # Default mode says what it is for; its stages sign with the keys it made.
        assert "for ONE TRUSTED MACHINE only" in "".join(lines)
        assert (tmp_path / "state" / "signing" / "public.json").exists()
        audit = subprocess.run(
            [sys.executable, "-m", "qbus", "--url", url, "audit", "verify", "--no-chain"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")},
        )
        assert audit.returncode == 0, audit.stderr
        assert int(re.search(r"(\d+) stage signatures checked", audit.stdout).group(1)) >= 2
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert _all_gone(pids)
    finally:
        if watch is not None:
            watch.kill()
        if up.poll() is None:
            up.kill()


@pytest.mark.timeout(120)
def test_up_stops_its_stages_and_server_on_sigterm(tmp_path: Path):
    """A service manager stops `qbus up` with SIGTERM: nothing it started may outlive it."""
    import re
    import signal

    up, lines = _start_up(tmp_path, "--no-metrics")
    try:
        pids = [int(m) for m in re.findall(r"pid (\d+)", "".join(lines))]
        assert len(pids) == 8  # nats-server and the seven stages
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert _all_gone(pids)
    finally:
        if up.poll() is None:
            up.kill()
