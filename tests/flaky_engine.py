"""An engine that fails on request, counted in a file, to prove retries (tests/test_retries.py).

Registered by the tests under the name ``flaky`` (``registry.BUILTIN_ENGINES``), like
``tests/hostile_engine.py``. The failure is chosen by markers among the request's
parameter names (extra parameters are allowed by the bus); each run adds one to the
counter file the marker names, so how many runs happened is on disk, whatever process
ran them. Without markers it is the reference engine.

Markers:
    ``transient:<counter file>``: fail retryably (``engine_throttled``) on the first
        ``value`` runs, then run normally.
    ``fatal:<counter file>``: always fail, not retryably (``engine_error``).
    ``validations:<counter file>``: count each validation of the request (the engine's
        ``_check`` hook, which ``Engine.validate`` calls once per validation).
"""

from __future__ import annotations

from pathlib import Path

from qbus.engines.base import EngineResult, RunRequest
from qbus.engines.reference import ReferenceEngine
from qbus.errors import EngineError


def _count(path: Path) -> int:
    """Add one to the counter in ``path``; the runs before this one."""
    before = int(path.read_text()) if path.exists() else 0
    path.write_text(str(before + 1))
    return before


class FlakyEngine(ReferenceEngine):
    """The reference engine, failing as its request's markers ask."""

    name = "flaky"

    def _check(self, request: RunRequest) -> None:
        for key in request.parameters:
            if key.startswith("validations:"):
                _count(Path(key.removeprefix("validations:")))

    def _run(self, request: RunRequest) -> EngineResult:
        for key, value in request.parameters.items():
            if key.startswith("transient:"):
                before = _count(Path(key.removeprefix("transient:")))
                if before < value:
                    raise EngineError(
                        f"throttled by the provider (run {before + 1})",
                        code="engine_throttled",
                        retryable=True,
                    )
            elif key.startswith("fatal:"):
                before = _count(Path(key.removeprefix("fatal:")))
                raise EngineError(f"the device rejected the program (run {before + 1})")
        return super()._run(request)
