"""The Go example client (clients/go/, nats.go from Debian's packages) against the bus.

Built offline with Debian's ``golang-go`` and ``golang-github-nats-io-go-nats-dev`` in
GOPATH mode (``GO111MODULE=off GOPATH=/usr/share/gocode``); scripts/setup.sh installs
both. Without them this test fails with that instruction rather than skipping, so CI
cannot silently stop checking the Go client.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from qbus.bus.config import Config
from qbus.consumers.pipeline import Pipeline

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "go"
GOPATH = Path("/usr/share/gocode")


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=CLIENT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=150)
    return proc.returncode or 0, out.decode(), err.decode()


async def build_client(tmp_path: Path) -> Path:
    """The Go client, built offline into ``tmp_path`` (fails with the setup hint)."""
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/github.com/nats-io/nats.go").is_dir():
        pytest.fail(
            "Go or nats.go is missing: run `bash scripts/setup.sh` as root (installs Debian's "
            "golang-go and golang-github-nats-io-go-nats-dev)"
        )
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOFLAGS": "",
        "GOCACHE": os.environ.get("GOCACHE", str(tmp_path / "gocache")),
    }
    binary = tmp_path / "qbus-go-submit"
    code, out, err = await _run(go, "build", "-o", str(binary), ".", env=env)
    assert code == 0, f"go build failed:\n{out}{err}"
    return binary


async def test_go_client_job_completes(config: Config, pipeline: Pipeline, tmp_path: Path):
    binary = await build_client(tmp_path)
    code, out, err = await _run(str(binary), "--url", config.bus.url, "--shots", "400")
    assert code == 0, (out, err)
    result = json.loads(out.strip().splitlines()[-1])
    jsonschema.validate(result, json.loads((ROOT / "schemas" / "job.completed.json").read_text()))
    assert sum(result["counts"].values()) == 400
