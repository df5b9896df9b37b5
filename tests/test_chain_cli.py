"""``qbus chain …`` and ``qbus up --chain anvil`` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import account_from_key
from tests.jobs import QASM2_BELL

pytestmark = pytest.mark.timeout(180)


def qbus(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qbus", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


def test_deploy_status_and_request_from_the_command_line(anvil: AnvilNode, tmp_path: Path):
    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    env = {"QBUS_CHAIN_RPC_URL": anvil.url, "QBUS_SECRET_CHAIN_VERIFIER_KEY": anvil.dev_keys[0]}
    out = qbus("chain", "deploy", env=env)
    assert out.returncode == 0, out.stderr
    address = out.stdout.strip()
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", address)
    env["QBUS_CHAIN_CONTRACT"] = address
    env["QBUS_SECRET_CHAIN_REQUESTER_KEY"] = anvil.dev_keys[1]
    out = qbus("chain", "request", str(program), "--shots", "77", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["request_id"] == 1
    out = qbus("chain", "status", "--batch", "1", env=env)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["owner"] == account_from_key(anvil.dev_keys[0]).address
    assert status["pending_owner"] is None
    assert (status["requests"], status["batches"], status["batch"]) == (1, 0, None)
    # No key: a clear error naming the variable, not a traceback.
    out = qbus(
        "chain",
        "deploy",
        env={"QBUS_CHAIN_RPC_URL": anvil.url, "QBUS_SECRET_CHAIN_VERIFIER_KEY": ""},
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr


def test_ownership_handover_from_the_command_line(anvil: AnvilNode):
    owner, new, other = (account_from_key(k).address for k in anvil.dev_keys[:3])
    env = {"QBUS_CHAIN_RPC_URL": anvil.url, "QBUS_SECRET_CHAIN_VERIFIER_KEY": anvil.dev_keys[0]}
    out = qbus("chain", "deploy", env=env)
    assert out.returncode == 0, out.stderr
    env["QBUS_CHAIN_CONTRACT"] = out.stdout.strip()
    env["QBUS_SECRET_CHAIN_NEW_OWNER_KEY"] = anvil.dev_keys[1]
    env["QBUS_SECRET_CHAIN_OTHER_KEY"] = anvil.dev_keys[2]

    out = qbus("chain", "transfer-ownership", new, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["owner"] == owner
    assert json.loads(out.stdout)["pending_owner"] == new
    status = json.loads(qbus("chain", "status", env=env).stdout)
    assert (status["owner"], status["pending_owner"]) == (owner, new)

    # A key that is not the pending owner's: a sentence naming the account, exit code 1.
    out = qbus("chain", "accept-ownership", "--key-secret", "chain/other_key", env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{other} is not the pending owner" in out.stderr

    out = qbus("chain", "accept-ownership", "--key-secret", "chain/new_owner_key", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) | {"tx_hash": None} == {
        "owner": new,
        "pending_owner": None,
        "tx_hash": None,
    }
    # The old owner (the default key) is now refused.
    out = qbus("chain", "transfer-ownership", "--cancel", env=env)
    assert out.returncode == 1 and f"{owner} is not the contract's owner" in out.stderr
    out = qbus("chain", "transfer-ownership", env=env)
    assert out.returncode == 2 and "give either NEW_OWNER or --cancel" in out.stderr


def test_up_with_anvil_anchors_results_and_ctrl_c_stops_the_node(tmp_path: Path):
    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    env = {**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")}
    env.pop("QBUS_SECRET_CHAIN_VERIFIER_KEY", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "qbus", "up", "--port", "-1", "--chain", "anvil", "--no-metrics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        while not any(ln.startswith("logs in") for ln in lines):
            line = up.stdout.readline()
            assert line, "qbus up exited early:\n" + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"nats://[\d.]+:\d+", text).group(0)
        rpc = re.search(r"QBUS_CHAIN_RPC_URL=(\S+)", text).group(1)
        contract = re.search(r"QBUS_CHAIN_CONTRACT=(\S+)", text).group(1)
        anvil_pid = int(re.search(r"anvil pid (\d+)", text).group(1))
        assert "stage anchor#1" in text and "stage chain-listen#1" in text
        chain_env = {"QBUS_URL": url, "QBUS_CHAIN_RPC_URL": rpc, "QBUS_CHAIN_CONTRACT": contract}
        out = qbus("submit", str(program), "--job-id", "up-chain-1", "--wait", env=chain_env)
        assert out.returncode == 0, out.stderr
        # The anchor stage closes its batch within the window: poll the contract for it.
        deadline = time.monotonic() + 30
        while True:
            out = qbus("chain", "status", "--batch", "1", env=chain_env)
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout)
            if status["batches"] >= 1 or time.monotonic() > deadline:
                break
        assert status["batches"] == 1 and status["batch"]["count"] == 1
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert (
            not Path(f"/proc/{anvil_pid}").exists()
            or "zombie" in Path(f"/proc/{anvil_pid}/status").read_text()
        )
    finally:
        if up.poll() is None:
            up.kill()
