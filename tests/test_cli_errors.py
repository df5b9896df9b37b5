"""The CLI helps before it connects: local parsing, validated options, one error format.

Every test here runs the real ``qbus`` command in its own process, without a server
(one test starts a bare nats-server to see a timeout). The exit codes are the table in
qbus/cli/exit.py and docs/operations.md.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qbus.bus.server import NatsServer
from qbus.cli.exit import EXIT_CODES
from tests.jobs import QASM2_BELL

pytestmark = pytest.mark.timeout(120)

BAD_GATE = QASM2_BELL.replace("h q[0];", "hadamard q[0];")
BAD_SYNTAX = QASM2_BELL.replace("cx q[0], q[1];", "cx q[0] q[1];")


def dead_url() -> str:
    """A loopback URL where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"nats://127.0.0.1:{port}"


def qbus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qbus", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


@pytest.fixture
def bell(tmp_path: Path) -> Path:
    path = tmp_path / "bell.qasm"
    path.write_text(QASM2_BELL)
    return path


def test_exit_code_table_is_distinct():
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert EXIT_CODES["usage"] == 2 and EXIT_CODES["unreachable"] == 3


@pytest.mark.parametrize("url", [None, "dead"])
def test_syntax_error_is_reported_with_line_and_column_server_or_not(tmp_path: Path, url):
    bad = tmp_path / "bad.qasm"
    bad.write_text(BAD_GATE)
    args = ["--url", dead_url()] if url else []
    out = qbus(*args, "submit", str(bad), "--wait")
    assert out.returncode == EXIT_CODES["failed"], out.stderr
    assert out.stderr.startswith(f"error: {bad}:5:1: unknown gate 'hadamard'"), out.stderr
    assert "[unknown_gate]" in out.stderr
    assert "cannot connect" not in out.stderr and "submitted" not in out.stderr


def test_a_parse_error_names_its_position(tmp_path: Path):
    bad = tmp_path / "bad.qasm"
    bad.write_text(BAD_SYNTAX)
    out = qbus("--url", dead_url(), "submit", str(bad))
    assert out.returncode == EXIT_CODES["failed"]
    line = BAD_SYNTAX.splitlines().index("cx q[0] q[1];") + 1
    assert BAD_SYNTAX != QASM2_BELL
    assert out.stderr.startswith(f"error: {bad}:{line}:"), out.stderr


def test_a_bad_json_ir_names_the_problem(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_qubits": 2, "ops": [{"name": "h", "qubits": [5]}]}')
    out = qbus("--url", dead_url(), "submit", str(bad))
    assert out.returncode == EXIT_CODES["failed"]
    assert out.stderr.startswith(f"error: {bad}") and "qubit 5" in out.stderr


def test_unreachable_server_says_how_to_start_or_point_at_one(bell: Path):
    url = dead_url()
    out = qbus("--url", url, "submit", str(bell))
    assert out.returncode == EXIT_CODES["unreachable"]
    assert out.stderr.startswith(f"error: cannot connect to NATS at {url}")
    assert "start one with 'qbus up' or pass --url" in out.stderr
    # The same for every command that needs the bus.
    for args in (["status", "some-job"], ["engines"], ["audit", "verify"]):
        out = qbus("--url", url, *args)
        assert out.returncode == EXIT_CODES["unreachable"], (args, out.stderr)
        assert "start one with 'qbus up'" in out.stderr, (args, out.stderr)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--shots", "-5"], "Invalid value for '--shots': -5 is not in the range x>=1"),
        (["--shots", "0"], "Invalid value for '--shots'"),
        (["--priority", "urgent"], "'urgent' is not one of 'high', 'normal', 'low'"),
        (["--method", "anneal"], "'anneal' is not one of"),
        (["--hypervisor", "docker"], "'docker' is not one of"),
        (["--memory-mb", "0"], "Invalid value for '--memory-mb'"),
        (["--timeout", "0"], "Invalid value for '--timeout'"),
        (["--chunk-size", "-1"], "Invalid value for '--chunk-size'"),
        (["--seed", "-3"], "Invalid value for '--seed'"),
    ],
)
def test_submit_options_are_checked_before_anything_else(bell: Path, args, says):
    out = qbus("--url", dead_url(), "submit", str(bell), *args)
    assert out.returncode == EXIT_CODES["usage"], out.stderr
    assert out.stderr.startswith("Usage: qbus submit"), out.stderr
    assert "\nerror: Invalid value for '--" in out.stderr and says in out.stderr, out.stderr
    assert "cannot connect" not in out.stderr


def test_unknown_stage_is_refused_before_connecting():
    out = qbus("--url", dead_url(), "stage", "bogus")
    assert out.returncode == EXIT_CODES["usage"]
    assert "'bogus' is not one of 'ingest', 'rewrite', 'route'" in out.stderr
    assert "cannot connect" not in out.stderr


def test_bad_config_file_is_a_usage_error(tmp_path: Path):
    cfg = tmp_path / "qbus.toml"
    cfg.write_text("[bus]\nno_such_setting = 1\n")
    out = qbus("--config", str(cfg), "engines")
    assert out.returncode == EXIT_CODES["usage"], out.stderr
    assert out.stderr.startswith("error: ") and "no_such_setting" in out.stderr


def test_engines_reads_metadata_only():
    # `qbus engines` must not import numpy or any framework (seconds each): the check is
    # what got imported, not how long it took.
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from qbus.cli import cli\n"
        "r = CliRunner().invoke(cli, ['engines'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
        "heavy = sorted(m for m in ('numpy', 'qiskit', 'qiskit_aer', 'cirq', 'jax', 'pennylane',"
        " 'qutip', 'braket') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
    assert any(ln.startswith("qiskit-aer") and "True" in ln for ln in out.stdout.splitlines())


def test_engines_check_loads_each_engine():
    out = qbus("engines", "--check")
    assert out.returncode == 0, out.stderr
    aer = next(ln for ln in out.stdout.splitlines() if ln.startswith("qiskit-aer"))
    assert "sample" in aer and "statevector" in aer


async def test_engines_with_url_shows_what_the_bus_runs(config, bus):
    await bus.ensure_executor("qsim")
    out = await _athread(qbus, "--url", config.bus.url, "engines", "--json")
    assert out.returncode == 0, out.stderr
    import json

    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["qsim"]["deployed"] is True and rows["qiskit-aer"]["deployed"] is False


async def test_waiting_past_the_timeout_is_exit_code_4(bell: Path, config, bus):
    # A provisioned bus with no stages: the job is stored and never answered.
    out = await _athread(
        qbus, "--url", config.bus.url, "submit", str(bell), "--wait", "--timeout", "1"
    )
    assert out.returncode == EXIT_CODES["timeout"], out.stderr
    assert "error: " in out.stderr and "qbus status" in out.stderr


def test_a_server_without_qbus_is_a_clear_error(bell: Path, tmp_path: Path):
    with NatsServer(tmp_path / "nats", port=-1) as server:
        out = qbus("--url", server.url, "submit", str(bell))
    assert out.returncode == EXIT_CODES["failed"], out.stderr
    assert out.stderr.startswith("error: no stream stores 'qbus.submit'"), out.stderr
    assert "Traceback" not in out.stderr


async def _athread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)
