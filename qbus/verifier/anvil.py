"""Start and stop a local anvil node (npm ``@foundry-rs/anvil``, pinned in tools/chain).

Used by ``qbus up --chain anvil`` and the test fixtures: loopback only, a free port
chosen by anvil (``--port 0``), the log in a file. Anvil prints its pre-funded
development accounts and their private keys (public, well-known test keys: never use
them on a real network); ``dev_keys`` reads them from that output so nothing has to be
written into code.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

from qbus.childproc import ChildServer
from qbus.errors import QbusError

ROOT = Path(__file__).resolve().parents[2]
_LISTEN_RE = re.compile(r"Listening on ([\d.]+):(\d+)")
_KEY_RE = re.compile(r"^\((\d+)\) (0x[0-9a-fA-F]{64})\s*$", re.M)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class AnvilError(QbusError):
    """anvil is missing or did not start (the message carries its output)."""

    code = "chain_node_error"


def find_anvil() -> str:
    """Path of the anvil binary: ``QBUS_ANVIL``, then tools/chain's npm package, then PATH.

    Raises:
        AnvilError: With the install hint when none is found.
    """
    override = os.environ.get("QBUS_ANVIL")
    if override:
        return override
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    # The platform package holds the binary itself; the wrapper's bin.mjs only execs it.
    candidate = (
        ROOT / "tools/chain/node_modules/@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    )
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilError(
        "anvil not found: run `bash scripts/setup.sh` (or `npm ci --prefix tools/chain`), "
        "or set QBUS_ANVIL to an anvil binary"
    )


class AnvilNode(ChildServer):
    """An anvil child process on loopback.

    Args:
        port: TCP port, or 0 for a free one.
        host: Address to listen on.
        chain_id: Chain id to report (anvil's default is 31337).
        block_time: Seconds per block; None mines a block per transaction.
        log_dir: Where the log goes (a temporary directory by default).
        start_timeout: Seconds to wait for the listen line.

    Use as a context manager, or call ``start()``/``stop()``.
    """

    name = "anvil"
    error = AnvilError

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        chain_id: int | None = None,
        block_time: float | None = None,
        log_dir: str | Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.port = port
        self.host = host
        self.chain_id = chain_id
        self.block_time = block_time
        self._own_dir = log_dir is None  # a temporary directory: removed at stop
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="qbus-anvil-"))
        self.log_path = self._log_dir / "anvil.log"
        self.start_timeout = start_timeout
        self._proc = None
        self.url = ""
        self.dev_keys: list[str] = []

    def start(self) -> AnvilNode:
        """Start anvil and wait until it listens.

        Raises:
            AnvilError: anvil exited or did not listen in time; with its output.
        """
        self._log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [find_anvil(), "--host", self.host, "--port", str(self.port)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        self._spawn(cmd)
        text = self._await_log(lambda text: _LISTEN_RE.search(text) is not None)
        match = _LISTEN_RE.search(text)
        assert match is not None
        self.port = int(match.group(2))
        self.url = f"http://{match.group(1)}:{self.port}"
        self.dev_keys = [key for _, key in _KEY_RE.findall(text)]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil (SIGTERM, then SIGKILL after ``timeout``); remove a temporary log dir."""
        super().stop(timeout)
        if self._own_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)
