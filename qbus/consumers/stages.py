"""Build and run any stage by name: what ``qbus stage NAME`` and the test fixtures call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from functools import partial
from typing import Protocol

from qbus.bus import tenancy
from qbus.bus.blobs import ObjectStoreBlobs
from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.consumers.audit import AuditStage
from qbus.consumers.execute import ExecuteHandler
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.rewrite import RewriteHandler
from qbus.consumers.route import DEFAULT_ENGINE, RouteHandler
from qbus.consumers.tenants import TenantGate
from qbus.consumers.verify import VerifyHandler
from qbus.errors import ConfigError
from qbus.secrets.resolve import stage_bus_config
from qbus.verifier.crosscheck import CrossChecker

STAGE_NAMES = ("ingest", "rewrite", "route", "execute", "verify", "audit", "anchor")

log = logging.getLogger("qbus.stage")


class Stage(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


def build_stage(name: str, bus: Bus, config: Config, *, engine: str = DEFAULT_ENGINE) -> Stage:
    """The stage called ``name`` on ``bus``.

    Raises:
        ConfigError: Unknown stage name.
    """
    s = bus.subjects
    match name:
        case "ingest":
            return StageRunner(
                bus,
                stage=name,
                durable="ingest",
                subjects=[s.submit, s.submit_for()],
                handler=IngestHandler(
                    config.limits,
                    config.hypervisor,
                    TenantGate(config.tenants, partial(tenancy.running_jobs, bus)),
                ),
            )
        case "rewrite":
            return StageRunner(
                bus,
                stage=name,
                durable="rewrite",
                subjects=[s.ingested()],
                handler=RewriteHandler(config.ai, config.limits),
                # An ai_optimize job waits on the model (up to [ai] timeout): keep the
                # batch from redelivery meanwhile.
                heartbeat=config.ai.enabled,
            )
        case "route":
            return StageRunner(
                bus,
                stage=name,
                durable="route",
                subjects=[s.rewritten()],
                handler=RouteHandler(deployed=bus.deployed_engines),
            )
        case "execute":
            handler = ExecuteHandler(
                engine, ObjectStoreBlobs(bus), config.limits, config.hypervisor
            )
            # A CPU-bound engine holds the event loop: small batches keep acks timely.
            return StageRunner(
                bus,
                stage=name,
                durable=bus.executor_durable(engine),
                subjects=[s.exec(engine)],
                handler=handler,
                batch=64,
                heartbeat=True,
            )
        case "verify":
            return StageRunner(
                bus,
                stage=name,
                durable="verify",
                subjects=[s.executed()],
                handler=VerifyHandler(crosscheck=CrossChecker(config.verify)),
                # A cross-check runs a second engine: keep the batch from redelivery.
                heartbeat=True,
            )
        case "audit":
            return AuditStage(bus)
        case "anchor":
            # Needs the chain extra (web3) and the verifier key: imported only when used.
            from qbus.consumers.anchor import AnchorStage

            return AnchorStage(bus, config)
    raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


async def run_stage(name: str, config: Config, *, engine: str = DEFAULT_ENGINE) -> None:
    """Connect, provision, and run one stage until SIGINT/SIGTERM."""
    bus = await Bus.connect(stage_bus_config(config, name), name=f"qbus-{name}")
    try:
        await bus.provision()
        stage = build_stage(name, bus, config, engine=engine)
        if isinstance(stage, StageRunner):
            stage.consumer_poll = config.observability.consumer_poll_seconds
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stage.stop)
        log.info("stage %s ready on %s", name, config.bus.url)
        await stage.run()
    finally:
        await bus.close()
