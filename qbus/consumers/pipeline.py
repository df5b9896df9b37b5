"""Every stage in one process: for embedding, tests and benchmarks.

Each stage still has its own NATS connection and durable consumer, exactly as in its own
process; only the OS process boundary is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.consumers.stages import Stage, build_stage
from qbus.secrets.resolve import stage_bus_config


class Pipeline:
    """Runs the given stages as asyncio tasks until closed.

    Args:
        config: Settings (the bus URL must point at a running server).
        stages: Stage names; ``execute`` runs one executor per engine in ``engines``.
        engines: Engines to run executors for.
    """

    def __init__(
        self,
        config: Config,
        stages: tuple[str, ...] = (
            "ingest",
            "rewrite",
            "route",
            "execute",
            "verify",
            "audit",
            "control",
        ),
        engines: tuple[str, ...] = ("qiskit-aer",),
    ) -> None:
        self.config = config
        self.stage_names = stages
        self.engines = engines
        self.stages: dict[str, Stage] = {}
        self._buses: list[Bus] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> Pipeline:
        admin = await Bus.connect(self.config.bus, name="qbus-pipeline")
        await admin.provision(
            cache_ttl=self.config.cache.ttl_seconds, chunks_ttl=self.config.chunks.ttl_seconds
        )
        if "execute" in self.stage_names:
            for engine in self.engines:
                await admin.ensure_executor(engine)
        self._buses.append(admin)
        for name in self.stage_names:
            for engine in self.engines if name == "execute" else (None,):
                bus = await Bus.connect(stage_bus_config(self.config, name), name=f"qbus-{name}")
                self._buses.append(bus)
                key = f"execute-{engine}" if engine else name
                stage = build_stage(name, bus, self.config, engine=engine or "qiskit-aer")
                if isinstance(stage, StageRunner):  # redelivery backoff, dead letters
                    stage.retries = self.config.retries
                self.stages[key] = stage
                self._tasks.append(asyncio.create_task(stage.run(), name=key))
        return self

    def check(self) -> None:
        """Raise the exception of any stage task that died."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"stage {task.get_name()} died") from task.exception()

    async def stop(self) -> None:
        for stage in self.stages.values():
            stage.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for bus in self._buses:
            with contextlib.suppress(Exception):
                await bus.close()

    async def __aenter__(self) -> Pipeline:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
