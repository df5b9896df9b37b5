"""Route: answer from the result cache, or choose an engine and publish the circuit to it.

Reads ``qbus.rewritten.*``; writes ``qbus.exec.<engine>.<job>`` (ExecutionRequested; high
and low priority jobs on ``qbus.exec.<engine>.<priority>.<job>``, jobs predicted to take at
least ``[lanes] heavy_seconds`` on ``qbus.exec.<engine>.heavy.<job>``) — the subject is the
route, so an executor group only ever sees its own engine's work — or, on a cache hit,
the job's final ``qbus.result.<job>`` (JobCompleted with ``cached=True``).

A second consumer of the same stage (``route-feedback``) reads ``qbus.executed.*`` and
``qbus.result.*``: observed run times update the cost model, and a verified result is
written to the cache. It publishes nothing. docs/routing.md has the whole policy.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import msgspec

from qbus.bus.config import ChunksConfig, Config, LanesConfig
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.engines.base import NOISE_ENGINES, Engine
from qbus.engines.registry import available_engines, get_engine
from qbus.errors import Reject
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.observability import metrics
from qbus.router.cache import ResultCache, cache_key, reusable
from qbus.router.capability import (
    DYNAMICS_ENGINES,
    capability_filter,
    control_engines,
    control_rejection,
    route_control,
    route_dynamics,
    route_noisy,
)
from qbus.router.chunks import split
from qbus.router.cost import CostModel, JobFeatures, features
from qbus.router.policy import DEFAULT_ENGINE, choose_engine, describe, rank
from qbus.schemas.events import (
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobOptions,
    JobRejected,
    answer,
    derived_event_id,
)
from qbus.schemas.ir import Circuit, control_constructs
from qbus.schemas.noise import is_noisy

__all__ = ["DEFAULT_ENGINE", "RouteFeedback", "RouteHandler", "RouteStage", "job_features"]


def job_features(circuit: Circuit, options: JobOptions) -> JobFeatures:
    """What the cost model sees of a job."""
    method = "statevector" if options.method == "expectation" else options.method
    return features(circuit, method, options.shots, len(options.sweep))


class RouteHandler:
    """Turns CircuitRewritten into ExecutionRequested on the chosen engine's subject.

    Args:
        default_engine: Pins ``engine="auto"`` to this engine (the pre-cost-model policy,
            for embedding); None (the default) lets the cost model choose.
        deployed: Returns the engines that have executors on this bus; ``auto`` chooses
            among them, and a job for an installed engine nobody runs is rejected instead
            of waiting for ever. None: every installed engine counts as deployed.
        backlog: (Engine, lane) -> messages waiting for or held by its executors in that
            lane (the load term).
        model: The cost model (shared with ``RouteFeedback``).
        cache: The result cache (None: no cache).
        version_policy: ``exact`` or ``any`` (``[cache]``).
        memory_cap_mb: The operator's memory cap for one run (``[hypervisor]``).
        load_engine: Engine name -> instance (the registry by default).
        chunks: How long jobs are split into chunks (``[chunks]``; qbus/router/chunks.py).
        lanes: When a job goes to the heavy lane (``[lanes]``; docs/routing.md).
    """

    stage = "route"
    DEPLOYED_TTL = 2.0
    BACKLOG_TTL = 1.0

    def __init__(
        self,
        default_engine: str | None = None,
        deployed: Callable[[], Awaitable[set[str]]] | None = None,
        *,
        backlog: Callable[[str, str], Awaitable[int]] | None = None,
        model: CostModel | None = None,
        cache: ResultCache | None = None,
        version_policy: str = "exact",
        memory_cap_mb: int = 32_768,
        load_engine: Callable[[str], Engine] = get_engine,
        chunks: ChunksConfig | None = None,
        lanes: LanesConfig | None = None,
    ) -> None:
        self.default_engine = default_engine
        self.chunks = chunks or ChunksConfig()
        self.lanes = lanes or LanesConfig()
        self._installed = available_engines()
        self._deployed_source = deployed
        self._deployed: set[str] = set()
        self._deployed_at = -1e9
        self._backlog_source = backlog
        self._backlog: dict[tuple[str, str], tuple[float, int]] = {}
        self.model = model or CostModel.load_defaults()
        self.cache = cache
        self.version_policy = version_policy
        self.memory_cap_mb = memory_cap_mb
        self._load = load_engine

    async def _deployed_now(self, refresh: bool = False) -> set[str]:
        now = time.monotonic()
        if refresh or now - self._deployed_at > self.DEPLOYED_TTL:
            self._deployed = await self._deployed_source()  # type: ignore[misc]
            self._deployed_at = now
        return self._deployed

    async def _is_deployed(self, engine: str) -> bool:
        if self._deployed_source is None:
            return True
        return engine in await self._deployed_now(refresh=engine not in self._deployed)

    def lane(self, predicted: float | None) -> str:
        """``heavy`` for a job predicted to run at least ``[lanes] heavy_seconds``."""
        return (
            "heavy" if predicted is not None and predicted >= self.lanes.heavy_seconds else "light"
        )

    async def _pending(self, engine: str, lane: str = "light") -> int:
        if self._backlog_source is None:
            return 0
        now = time.monotonic()
        at, value = self._backlog.get((engine, lane), (-1e9, 0))
        if now - at > self.BACKLOG_TTL:
            try:
                value = await self._backlog_source(engine, lane)
            except Exception:  # a missing consumer or a slow server: no load term
                value = 0
            self._backlog[(engine, lane)] = (now, value)
        return value

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, CircuitRewritten):
            return []
        opts = event.options
        if opts.engine not in (*self._installed, "auto"):
            # Reading entry points costs milliseconds: only on a name we have not seen.
            self._installed = available_engines()
        if opts.engine != "auto":
            # Unknown names are refused before the cache is asked.
            choose_engine(opts.engine, self._installed)
        hit = await self._cached(event)
        if hit is not None:
            return [hit]
        predicted: float | None = None
        if opts.engine == "auto" and self.default_engine is None:
            engine, reason, predicted = await self._auto(event)
        else:
            engine, reason = choose_engine(
                opts.engine, self._installed, self.default_engine or DEFAULT_ENGINE
            )
            if is_noisy(opts.noise):
                engine, reason = route_noisy(opts.engine, engine, reason, self._installed)
            if opts.method == "dynamics":
                engine, reason = route_dynamics(opts.engine, engine, reason, self._installed)
            engine, reason = route_control(
                opts.engine, engine, reason, event.circuit, self._installed, self._load
            )
            if not await self._is_deployed(engine):
                running = ", ".join(sorted(self._deployed)) or "none"
                raise Reject(
                    f"engine {engine!r} is installed but no executor runs it on this bus "
                    f"(engines with executors: {running}); start one with "
                    f"`qbus stage execute --engine {engine}` or `qbus up --engine {engine}`",
                    code="engine_not_deployed",
                    where="$.engine",
                )
            predicted = self.model.predict(engine, job_features(event.circuit, opts))
        # A long job (a long sweep, a long shot-by-shot sample) goes out as one request
        # per chunk (docs/long-jobs.md).
        return split(
            answer(
                event,
                ExecutionRequested,
                "qbus.route",
                engine=engine,
                circuit=event.circuit,
                circuit_hash=event.circuit_hash,
                options=event.options,
                route_reason=reason,
                predicted_seconds=predicted,
                # The whole job's prediction decides; its chunks all inherit this lane.
                lane=self.lane(predicted),
            ),
            self.chunks.points,
            self.chunks.max_chunks,
            shot_seconds=self.chunks.shot_seconds,
            min_shots=self.chunks.min_shots,
        )

    async def _auto(self, event: CircuitRewritten) -> tuple[str, str, float]:
        """The cheapest capable deployed engine: (engine, reason, predicted seconds).

        Raises:
            Reject: ``no_capable_engine``, saying why each deployed engine was excluded.
        """
        opts = event.options
        if self._deployed_source is None:
            candidates = list(self._installed)
        else:
            deployed = await self._deployed_now()
            candidates = sorted(e for e in deployed if e in self._installed)
        fit = capability_filter(
            candidates, event.circuit, opts, self.memory_cap_mb, load=self._load
        )
        if not fit.capable:
            constructs = control_constructs(event.circuit)
            capable = control_engines(constructs, self._installed, self._load)
            if constructs and not set(capable) & set(candidates):
                raise control_rejection(constructs, capable, "$")
            where = "deployed" if self._deployed_source is not None else "installed"
            raise Reject(
                f"no {where} engine can run this job "
                f"({event.circuit.num_qubits} qubits, method {opts.method!r}"
                f"{', noisy' if is_noisy(opts.noise) else ''}): "
                + (fit.explain() or "no engines are deployed"),
                code="no_capable_engine",
                where="$",
            )
        job = job_features(event.circuit, opts)
        preference = (
            NOISE_ENGINES
            if is_noisy(opts.noise)
            else DYNAMICS_ENGINES
            if opts.method == "dynamics"
            else ()
        )
        if preference:
            # The model is calibrated on noiseless state-vector runs; density-matrix and
            # dynamics jobs follow the engines' preference order (docs/routing.md).
            ordered = [e for e in preference if e in fit.capable] or fit.capable
            engine = ordered[0]
            kind = "noisy" if is_noisy(opts.noise) else "dynamics"
            return (
                engine,
                f"auto: {kind} job, first capable of {', '.join(ordered)}",
                (self.model.predict(engine, job)),
            )
        runs = {e: self.model.predict(e, job) for e in fit.capable}
        # The load term counts the lane the job would join on each engine: heavy work
        # does not hold up light jobs, and each waiting heavy job takes at least
        # heavy_seconds (the engine's mean run is mostly light jobs).
        lanes = {e: self.lane(runs[e]) for e in fit.capable}
        backlog = dict(
            zip(
                fit.capable,
                await asyncio.gather(*(self._pending(e, lanes[e]) for e in fit.capable)),
                strict=True,
            )
        )

        def wait(e: str) -> float:
            mean = self.model.mean_seconds(e, runs[e])
            if lanes[e] == "heavy":
                mean = max(mean, self.lanes.heavy_seconds) / self.lanes.heavy_slots
            return backlog[e] * mean

        ranked = rank(fit.capable, runs.__getitem__, wait)
        return ranked[0].engine, describe(ranked), ranked[0].run_seconds

    async def _cached(self, event: CircuitRewritten) -> JobCompleted | None:
        """The job's final event answered from the cache, or None on a miss."""
        opts = event.options
        if (
            self.cache is None
            or not opts.cache
            or not reusable(opts.method, opts.seed, event.job_id)
        ):
            return None
        stored = await self.cache.get(cache_key(event.circuit_hash, opts, self.version_policy))
        if stored is not None and self.version_policy == "exact":
            try:
                current = self._load(stored.engine).version
            except Exception:
                current = None
            if current != stored.engine_version:
                stored = None
        metrics.cache_lookup(stored is not None)
        if stored is None:
            return None
        return msgspec.structs.replace(
            stored,
            event_id=derived_event_id(event.event_id, "job.completed", job_id=event.job_id),
            job_id=event.job_id,
            causation_id=event.event_id,
            producer="qbus.route",
            timestamp=time.time(),
            tenant=opts.tenant,
            cached=True,
            cached_from=stored.cached_from or stored.job_id,
        )


class RouteFeedback:
    """What the route stage learns from results: run times, and verified results to cache.

    Args:
        model: The cost model the route handler predicts with.
        cache: The result cache (None: nothing is cached).
        version_policy: ``exact`` or ``any``; part of the key.
        execution_of: Job id -> the last event on its ``qbus.executed.<job>`` subject
            (the run a JobCompleted answers, whose options make the cache key).
    """

    stage = "route"

    def __init__(
        self,
        model: CostModel,
        cache: ResultCache | None = None,
        version_policy: str = "exact",
        execution_of: Callable[[str], Awaitable[Event | None]] | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        self.version_policy = version_policy
        self.execution_of = execution_of
        self.cached_writes = 0
        # The runs this consumer has just seen, by job: a JobCompleted comes after its
        # ExecutionCompleted on the same consumer, so its cache key is usually here and
        # the log need not be read (bounded; a miss reads the log as before).
        self._runs: OrderedDict[str, ExecutionCompleted] = OrderedDict()

    RECENT_RUNS = 4096

    async def handle(self, event: Event) -> Sequence[Event]:
        match event:
            case ExecutionCompleted():
                if (
                    self.cache is not None
                    and event.chunk is None
                    and reusable(event.options.method, event.options.seed, event.job_id)
                ):
                    self._runs[event.job_id] = event
                    self._runs.move_to_end(event.job_id)
                    if len(self._runs) > self.RECENT_RUNS:
                        self._runs.popitem(last=False)
                opts = event.options
                # The model covers noiseless runs; density-matrix and dynamics runs
                # would skew an engine's correction (docs/routing.md).
                if not is_noisy(opts.noise) and opts.method != "dynamics":
                    job = job_features(event.circuit, opts)
                    self.model.observe(event.engine, job, event.run_seconds, event.event_id)
            case JobCompleted():
                await self._remember(event, self._runs.pop(event.job_id, None))
            case JobFailed() | JobRejected():
                self._runs.pop(event.job_id, None)
        return []

    async def _remember(self, event: JobCompleted, recent: ExecutionCompleted | None) -> None:
        if (
            self.cache is None
            or self.execution_of is None
            or event.cached
            or event.chunk_engines  # assembled from chunks: no single run to key it by
            or event.verification.verdict != "pass"
            or not reusable(event.method, event.seed, event.job_id)
        ):
            return
        run: Event | None = recent
        if run is None or run.event_id != event.causation_id:
            run = await self.execution_of(event.job_id)
        if not isinstance(run, ExecutionCompleted) or run.event_id != event.causation_id:
            return  # not a plain run's answer (or the log moved on): nothing to key it by
        await self.cache.put(cache_key(run.circuit_hash, run.options, self.version_policy), event)
        self.cached_writes += 1


class RouteStage:
    """The route stage: its routing consumer and its feedback consumer, one process.

    Args:
        bus: Connected bus.
        config: Settings (``[cache]``, ``[hypervisor] max_memory_mb``).
    """

    def __init__(self, bus: Bus, config: Config) -> None:
        s = bus.subjects
        self.bus = bus
        self.model = CostModel.load_defaults()
        cache = None
        if config.cache.enabled:
            cache = ResultCache(bus.js, bus.config.kv_cache, config.cache.ttl_seconds)
        policy = config.cache.version_policy
        self.handler = RouteHandler(
            deployed=bus.deployed_engines,
            backlog=bus.executor_backlog,
            model=self.model,
            cache=cache,
            version_policy=policy,
            memory_cap_mb=config.hypervisor.max_memory_mb,
            chunks=config.chunks,
            lanes=config.lanes,
        )
        self.feedback = RouteFeedback(self.model, cache, policy, partial(last_execution, bus))
        self.router = StageRunner(
            bus, stage="route", durable="route", subjects=[s.rewritten()], handler=self.handler
        )
        # Its own stage name: its spans and metrics are not the routing consumer's.
        self.learner = StageRunner(
            bus,
            stage="route-feedback",
            durable="route-feedback",
            subjects=[s.executed(), s.result()],
            handler=self.feedback,
            consumer_poll=0,
        )

    @property
    def processed(self) -> int:
        """Messages the routing consumer has handled."""
        return self.router.processed

    async def run(self) -> None:
        """Run both consumers until ``stop()``."""
        await asyncio.gather(self.router.run(), self.learner.run())

    def stop(self) -> None:
        """Stop both consumers after their current batch."""
        self.router.stop()
        self.learner.stop()


async def last_execution(bus: Bus, job_id: str) -> Event | None:
    """The last event on the job's executed subject; None when there is none, or, with
    the stages' keys, when it does not verify: a forged run under the real one's
    (derivable) event id would key a real result under another circuit in the cache."""
    try:
        msg = await bus.js.get_last_msg(bus.config.stream, bus.subjects.executed(job_id))
    except Exception:
        return None
    if bus.trust and bus.trust.message_problem(msg.subject, msg.data, msg.headers):
        return None
    try:
        return decode_event(msg.data)
    except UNDECODABLE:
        return None
