"""A server binary run as a child process: nats-server, anvil.

The log goes to a file, not a pipe (a pipe nobody drains would block the server), and
the child gets its own session, so a terminal's Ctrl-C reaches the supervisor, which
stops the stages first and the servers last. Readiness is read from the log.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from qbus.errors import QbusError


class ChildServer:
    """Base of the server launchers: spawn, wait for the log to say ready, stop.

    Subclasses set ``name``, ``log_path`` and ``start_timeout``, build the command in
    ``start()`` and call ``_spawn`` then ``_await_log``.
    """

    name = "server"
    error: type[QbusError] = QbusError
    log_path: Path
    start_timeout: float
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _spawn(self, cmd: Sequence[str]) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _await_log(self, ready: Callable[[str], bool]) -> str:
        """Poll the log until ``ready(text)``; returns that text.

        Raises:
            error: The child exited, or was not ready within ``start_timeout`` (then it
                is stopped); the message carries the relevant log lines.
        """
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if ready(text):
                return text
            if self._proc.poll() is not None:
                raise self.error(f"{self.name} exited at start:\n{self.excerpt(text)}")
            time.sleep(delay)  # polling the log file, not synchronising with a peer
            delay = min(delay * 2, 0.1)
        self.stop()
        raise self.error(
            f"{self.name} not ready after {self.start_timeout} s:\n"
            f"{self.excerpt(self.log_path.read_text(errors='replace'))}"
        )

    def excerpt(self, text: str) -> str:
        """The log lines worth showing in an error (the last 20 by default)."""
        return "\n".join(text.splitlines()[-20:])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        """True while the child is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
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
        """Kill the child without letting it flush (for crash tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
