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
from qbus.bus.control_watch import ControlWatch
from qbus.bus.fair import FairStageRunner
from qbus.bus.job_log import has_final
from qbus.bus.ledger import JobStates, LedgerStore
from qbus.bus.runner import StageRunner
from qbus.bus.signing import load_trust
from qbus.bus.subjects import STAGE_NAMES
from qbus.consumers.anchor import AnchorStage
from qbus.consumers.assemble import Assembler
from qbus.consumers.audit import AuditStage
from qbus.consumers.control import ExecutionGate, control_stage
from qbus.consumers.execute import ExecuteHandler
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.retry import RetryPolicy, find_request
from qbus.consumers.rewrite import RewriteHandler
from qbus.consumers.route import DEFAULT_ENGINE, RouteStage
from qbus.consumers.tenants import TenantGate
from qbus.consumers.verify import VerifyHandler
from qbus.errors import ConfigError
from qbus.router.priority import PriorityStageRunner
from qbus.secrets.resolve import stage_bus_config
from qbus.secrets.stage_keys import stage_signer
from qbus.verifier.crosscheck import CrossChecker

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
    # Sign what the stage publishes; check the final events it reads (bus/signing.py).
    bus.signer = stage_signer(config, name)
    bus.trust = load_trust(config)
    match name:
        case "ingest":
            # Senders (submit subjects) served in turn: one sender's flood does not hold up
            # another's jobs; small batches so a quiet sender's turn comes soon (fair.py).
            return FairStageRunner(
                bus,
                stage=name,
                durable="ingest",
                # submit.>, not submit.*: a message on an unknown submit subject is
                # refused (unknown_subject) rather than left unread in the log.
                subjects=[s.submit, s.submit_all],
                handler=IngestHandler(
                    config.limits,
                    config.hypervisor,
                    TenantGate(config.tenants, partial(tenancy.running_jobs, bus)),
                ),
                batch=64,
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
            # Routing plus its feedback consumer (cost model, result cache): route.py.
            return RouteStage(bus, config)
        case "execute":
            # Skip work of an ended, cancelled or rerouted job: control.py. One gate (one
            # control watch) for the light lanes and the heavy slots.
            gate = ExecutionGate(
                JobStates(bus.js, bus.config.kv_jobs),
                ControlWatch(bus),
                # With stage keys, a final state counts only with a signed final event.
                ended=partial(has_final, bus) if bus.trust is not None else None,
            )

            def execute_handler(nice: int = 0, idle: bool = False) -> ExecuteHandler:
                return ExecuteHandler(
                    engine,
                    ObjectStoreBlobs(bus),
                    config.limits,
                    config.hypervisor,
                    gate=gate,
                    nice=nice,
                    idle=idle,
                )

            # A CPU-bound engine holds the event loop: small batches keep acks timely.
            # One consumer per priority, high drained first, and heavy slots, each with
            # its own handler and niced sandbox worker (docs/routing.md).
            lanes = config.lanes
            return PriorityStageRunner(
                bus,
                engine=engine,
                stage=name,
                durable=bus.executor_durable(engine),
                subjects=[s.exec(engine)],
                handler=execute_handler(),
                heavy=[
                    execute_handler(lanes.heavy_nice, lanes.heavy_idle)
                    for _ in range(lanes.heavy_slots)
                ],
                batch=64,
                heartbeat=True,
            )
        case "verify":
            return StageRunner(
                bus,
                stage=name,
                durable="verify",
                subjects=[s.executed()],
                handler=VerifyHandler(
                    crosscheck=CrossChecker(config.verify),
                    # Long jobs: chunk results are joined here (consumers/assemble.py).
                    assembler=Assembler(
                        LedgerStore(bus.js, bus.config.kv_chunks),
                        JobStates(bus.js, bus.config.kv_jobs).get,
                        ControlWatch(bus),
                    ),
                    # Transient engine failures are run again (consumers/retry.py).
                    retry=RetryPolicy(
                        config.retries, partial(find_request, bus), partial(has_final, bus)
                    ),
                ),
                # A cross-check runs a second engine: keep the batch from redelivery.
                heartbeat=True,
            )
        case "audit":
            return AuditStage(bus)
        case "control":
            # Reroute and cancel (docs/long-jobs.md).
            return control_stage(bus, config)
        case "anchor":
            # web3 (the chain extra) loads when the stage connects, not at import.
            return AnchorStage(bus, config)
    raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


# Seconds a starting stage keeps trying to reach its server before it exits (and its
# supervisor, which backs off, starts it again).
STAGE_START_RETRY = 120.0


async def run_stage(name: str, config: Config, *, engine: str = DEFAULT_ENGINE) -> None:
    """Connect, provision, and run one stage until SIGINT/SIGTERM."""
    # A stage started while its server (or cluster) restarts waits for it rather than
    # exiting; provisioning retries likewise (qbus/bus/retry.py).
    bus = await Bus.connect(
        stage_bus_config(config, name), name=f"qbus-{name}", retry_for=STAGE_START_RETRY
    )
    try:
        await bus.provision(
            cache_ttl=config.cache.ttl_seconds, chunks_ttl=config.chunks.ttl_seconds
        )
        stage = build_stage(name, bus, config, engine=engine)
        if isinstance(stage, StageRunner):
            stage.consumer_poll = config.observability.consumer_poll_seconds
            stage.retries = config.retries
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stage.stop)
        log.info("stage %s ready on %s", name, config.bus.url)
        await stage.run()
    finally:
        await bus.close()
