"""The ``inline`` driver: the engine runs in the executor's own process (trusted, fastest).

Every driver has the same shape — ``run(engine, request) -> EngineResult`` — so the execute
stage does not change when a job asks for stronger isolation.
"""

from __future__ import annotations

from typing import Protocol

from qbus.engines.base import Engine, EngineResult, RunRequest


class Sandbox(Protocol):
    """Runs one engine request somewhere, under some isolation."""

    name: str

    def run(self, engine: Engine, request: RunRequest) -> EngineResult: ...


class InlineSandbox:
    """No isolation: the engine runs in this process (the caller has validated)."""

    name = "inline"

    def run(self, engine: Engine, request: RunRequest) -> EngineResult:
        return engine.run(request)
