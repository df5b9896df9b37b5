"""An engine whose code misbehaves on request, to prove what the sandboxes stop.

Loaded by sandbox workers by its dotted path (``tests.hostile_engine:HostileEngine``).
The misbehaviour is chosen by markers among the request's parameter names (extra
parameters are allowed by the bus), so one engine serves every case; without markers it
is the reference engine and runs the circuit normally.

Markers:
    ``socket``: open a TCP connection to 127.0.0.1 (port = the value).
    ``read:<path>``: read a file (``/etc/shadow``, one under the state dir …).
    ``write:<path>``: create a file.
    ``alloc_mb``: allocate and touch this many MiB.
    ``spin``: loop on the CPU for this many seconds.
    ``kill_parent``: SIGKILL the parent process (the sandbox's warm worker).
    ``segv``: die of SIGSEGV at once, using almost no memory (a crash, not a limit).
    ``panic``: raise a ``BaseException`` that is no ``Exception``, as a Rust panic
        through PyO3 does (QuEST's ``PanicException``).
"""

from __future__ import annotations

import os
import signal
import socket
import time

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.reference import ReferenceEngine


class Panic(BaseException):
    """What PyO3 raises for a Rust panic: a BaseException, not an Exception."""


class HostileEngine(ReferenceEngine):
    """The reference engine, plus the misbehaviour its request's markers ask for."""

    name = "hostile"

    def _run(self, request: RunRequest) -> EngineResult:
        for key, value in request.parameters.items():
            if key == "socket":
                with socket.create_connection(("127.0.0.1", int(value)), timeout=2):
                    pass
            elif key.startswith("read:"):
                with open(key[5:], "rb") as f:
                    f.read()
            elif key.startswith("write:"):
                with open(key[6:], "w") as f:
                    f.write("escaped")
            elif key == "alloc_mb":
                # Touch every page so the memory is really resident, chunk by chunk.
                hoard = [bytearray(16 << 20) for _ in range(int(value) // 16)]
                del hoard
            elif key == "panic":
                raise Panic("index out of bounds: the len is 1 but the index is 1")
            elif key == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif key == "kill_parent":
                os.kill(os.getppid(), signal.SIGKILL)
            elif key == "spin":
                end = time.process_time() + value
                while time.process_time() < end:
                    pass
        return super()._run(request)
