"""Python client API: submit circuits, await results, stream and replay final events.

```python
async with Client("nats://127.0.0.1:4222") as c:
    job = await c.submit(qasm_text, shots=1000)
    result = await job.result(timeout=60)          # JobCompleted / JobFailed / JobRejected
    async with c.results(start_sequence=1) as stream:  # replay every final event so far
        async for delivery in stream:
            print(delivery.sequence, delivery.event)
```

``SyncClient`` offers the same for code without an event loop. The client is a thin layer
over ``qbus.bus.connection.Bus`` and ``qbus.producers.submit``: the same publish path
(``Nats-Msg-Id`` dedupe, headers) and the same result wait as the CLI.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from nats.js import api as js_api

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.bus.signing import Trust
from qbus.bus.subjects import refusal_key
from qbus.bus.tenancy import wait_tenant_result
from qbus.errors import MissingOptionalLibraryError, QbusError, SchemaError, validation_path
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.observability import tracing
from qbus.producers.submit import submit, wait_answer, wait_final
from qbus.schemas.events import (
    Event,
    JobSubmitted,
    is_valid_job_id,
    new_event_id,
    new_job_id,
)
from qbus.schemas.ir import Circuit

log = logging.getLogger("qbus.client")
T = TypeVar("T")
_DEFAULT: Any = object()  # "use the client's default timeout"
# JobSubmitted fields that submit() sets itself and never takes as **options.
_NOT_OPTIONS = frozenset(
    ("event_id", "causation_id", "schema_version", "timestamp", "producer", "source", "circuit")
)

# What ``Client.submit`` accepts, for error messages.
ACCEPTED = (
    "OpenQASM 2/3 or JSON IR text, a qbus Circuit, a dict in the IR's shape, "
    "a qiskit.QuantumCircuit, a cirq.Circuit, a braket.circuits.Circuit or a pyquil.Program"
)


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, random trace and span ids, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def circuit_fields(circuit: Any, format: str = "auto") -> dict[str, Any]:
    """The JobSubmitted fields (``source``/``format`` or ``circuit``) for ``circuit``.

    Args:
        circuit: See ``ACCEPTED``. Framework objects are recognised by their module, so
            Qiskit, Cirq and Braket are imported only when such an object is passed; a
            ``pyquil.Program`` is sent as its Quil text.
        format: Format of text input (``auto``, ``qasm2``, ``qasm3``, ``json``, ``quil``).

    Raises:
        SchemaError: A dict that does not match the IR (``where`` names the field).
        MissingOptionalLibraryError: The object's framework cannot be imported.
        TypeError: Anything else.
    """
    if isinstance(circuit, str):
        return {"source": circuit, "format": format}
    if isinstance(circuit, Circuit):
        return {"circuit": circuit}
    if isinstance(circuit, Mapping):
        try:
            return {"circuit": msgspec.convert(dict(circuit), Circuit)}
        except msgspec.ValidationError as exc:
            raise SchemaError(f"invalid JSON IR: {exc}", where=validation_path(exc)) from exc
    module = type(circuit).__module__.split(".", 1)[0]
    if module == "qiskit":
        # Deferred: convert_qiskit imports qiskit, an optional extra.
        from qbus.engines.convert_qiskit import from_qiskit

        return {"circuit": from_qiskit(circuit)}
    if module == "cirq":
        try:
            import cirq  # type: ignore[import-not-found]
        except ImportError as exc:
            raise MissingOptionalLibraryError(
                "cirq", "cirq", "submitting a Cirq circuit", hint="pip install cirq-core"
            ) from exc
        # Cirq writes OpenQASM 2.0, which ingest parses like any other submission.
        return {"source": cirq.qasm(circuit), "format": "qasm2"}
    if module == "braket":
        try:
            from braket.circuits.serialization import (  # type: ignore[import-not-found]
                IRType,
            )
        except ImportError as exc:
            raise MissingOptionalLibraryError(
                "amazon-braket-sdk",
                "braket",
                "submitting a Braket circuit",
                hint="pip install amazon-braket-sdk",
            ) from exc
        return {"source": circuit.to_ir(ir_type=IRType.OPENQASM).source, "format": "qasm3"}
    if module == "pyquil":
        # Quil text, parsed by ingest like any other Quil submission, so the log keeps it.
        return {"source": circuit.out(), "format": "quil"}
    raise TypeError(f"cannot submit a {type(circuit).__qualname__}: give {ACCEPTED}")


@dataclass(frozen=True)
class Delivery:
    """One event read from the event log.

    Attributes:
        sequence: Its sequence in the event-log stream: pass ``sequence + 1`` as
            ``start_sequence`` to resume after it.
        subject: The subject it was published on.
        event: The decoded event.
    """

    sequence: int
    subject: str
    event: Event


class ResultStream:
    """Final events from ``qbus.result.<filter>`` through an ephemeral ordered consumer.

    Use as ``async with client.results() as s: async for d in s: …`` (the consumer is
    created on enter and dropped on exit), or iterate directly and call ``aclose()``.
    Events this version cannot decode (a newer tag) are logged and skipped, and so are
    forged ones when the client has the stages' public keys (``trusted_keys``).
    """

    def __init__(
        self,
        bus: Bus,
        job_filter: str = "*",
        *,
        start_sequence: int | None = None,
        start_time: datetime.datetime | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        if start_sequence is not None and start_time is not None:
            raise ValueError("give start_sequence or start_time, not both")
        if job_filter != "*" and not is_valid_job_id(job_filter):
            raise ValueError(f"job_filter must be '*' or a job id, not {job_filter!r}")
        self._bus = bus
        self._subject = bus.subjects.result(job_filter)
        self._start_sequence = start_sequence
        self._start_time = start_time
        self._idle_timeout = idle_timeout
        self._sub: Any = None
        self._closed = False
        self._on_close: Callable[[ResultStream], None] | None = None
        # Final events stored after the last one returned, as its delivery said: 0 means
        # the stream has caught up with the log (a replay can stop there).
        self.pending: int | None = None

    async def start(self) -> ResultStream:
        """Create the consumer; from here on no final event (after the start point) is missed."""
        if self._sub is not None:
            return self
        config = js_api.ConsumerConfig()
        if self._start_sequence is not None:
            policy = js_api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self._start_sequence
        elif self._start_time is not None:
            policy = js_api.DeliverPolicy.BY_START_TIME
            start = self._start_time
            if start.tzinfo is None:
                start = start.replace(tzinfo=datetime.UTC)
            config.opt_start_time = start
        else:
            policy = js_api.DeliverPolicy.NEW
        self._sub = await self._bus.js.subscribe(
            self._subject,
            stream=self._bus.config.stream,
            ordered_consumer=True,
            deliver_policy=policy,
            config=config,
        )
        return self

    async def aclose(self) -> None:
        """Stop reading; iteration ends and the server drops the ephemeral consumer."""
        self._closed = True
        if self._on_close is not None:
            self._on_close(self)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def __aiter__(self) -> ResultStream:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while True:
            sub = self._sub
            if sub is None:  # closed by another task while we waited
                raise StopAsyncIteration
            try:
                msg = await sub.next_msg(timeout=self._idle_timeout)
            except Exception as exc:
                # The idle timeout (nats-py's TimeoutError subclasses the builtin), or
                # any error once the stream was closed under us: the iteration ends.
                if not isinstance(exc, TimeoutError) and not self._closed:
                    raise
                await self.aclose()
                raise StopAsyncIteration from None
            try:
                event = decode_event(msg.data)
            except UNDECODABLE as exc:
                log.warning("skipping undecodable event on %s: %s", msg.subject, exc)
                continue
            trust = self._bus.trust
            forged = trust and trust.problem(event, msg.subject, msg.data, msg.headers)
            if forged:  # with the stages' keys: no stage allowed to write it signed it
                log.warning("skipping a forged event on %s: %s", msg.subject, forged)
                continue
            self.pending = msg.metadata.num_pending
            return Delivery(msg.metadata.sequence.stream, msg.subject, event)

    async def backlog(self) -> int:
        """Final events this stream has been sent or has still to be sent by the server,
        from its start point (asks the server; 0: the log holds none after it)."""
        await self.start()
        info = await self._sub.consumer_info()
        # Pushed already (delivered) or still to push (pending): both are to be read.
        return info.num_pending + (info.delivered.consumer_seq or 0)

    async def __aenter__(self) -> ResultStream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Job:
    """A submitted job.

    Attributes:
        job_id: Its id.
        sequence: The submission's sequence in the event log.
        traceparent: The W3C trace context it was submitted with.
        event_id: The submission's event id ("" for a job submitted elsewhere).
    """

    def __init__(
        self, client: Client, job_id: str, sequence: int, traceparent: str, event_id: str = ""
    ) -> None:
        self._client = client
        self.job_id = job_id
        self.sequence = sequence
        self.traceparent = traceparent
        self.event_id = event_id

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, sequence={self.sequence})"

    async def result(self, timeout: float = 60.0) -> Event:
        """The job's final event: JobCompleted, JobFailed or JobRejected.

        For a job this client submitted, the refusal of its submission counts too: a
        JobRejected with ``refusal`` set, e.g. ``duplicate_job_id`` when another
        submission already holds the job id (docs/protocol.md, "Answers").

        Raises:
            TimeoutError: No final event within ``timeout`` seconds.
        """
        bus = self._client.bus
        key = refusal_key(self.event_id, self.sequence) if self.event_id else None
        if self._client.tenant:
            # A tenant may read only its own copy of the final event.
            return await wait_tenant_result(
                bus, self._client.tenant, self.job_id, timeout, refusal=key
            )
        if self.event_id:
            return await wait_answer(bus, self.job_id, self.event_id, self.sequence, timeout)
        return await wait_final(bus, self.job_id, timeout=timeout)

    async def events(
        self, *, follow: bool = True, timeout: float = 60.0
    ) -> AsyncIterator[Delivery]:
        """The job's events in log order, from ``circuit.ingested`` to its final event.

        The submission is not among them: it is on the shared ``qbus.submit`` subject.

        Args:
            follow: Wait for events not yet published (until the final one); without it,
                stop at the end of what the log holds now.
            timeout: With ``follow``, give up after this long without a new event.

        Raises:
            TimeoutError: ``follow`` and no new event within ``timeout`` seconds.
        """
        if follow:
            source = self._follow(timeout)
        else:
            source = events_of(self._client.bus, self.job_id, follow=False, timeout=timeout)
        async for seq, subject, event in source:
            yield Delivery(seq, subject, event)

    async def _follow(self, timeout: float) -> AsyncIterator[tuple[int, str, Event]]:
        # events_of(follow=True) waits for ever; bound each wait so a lost job surfaces.
        it = events_of(self._client.bus, self.job_id, follow=True, timeout=timeout)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(anext(it), timeout)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise TimeoutError(
                        f"no event for job {self.job_id} within {timeout} s"
                    ) from None
                yield item
        finally:
            await it.aclose()


class Client:
    """An asyncio client of the bus.

    Args:
        url: NATS URL; ignored when ``config`` is given.
        config: Full bus settings (credentials, prefix, stream name).
        producer: The ``producer`` field of the jobs it submits.
        name: The NATS connection name.
        tenant: Submit as this tenant (on ``qbus.submit.<tenant>``) and wait for results
            on ``qbus_tenant.<tenant>.result.<job>``: what a tenant's NATS user may do in auth
            mode (docs/security.md; ``config`` then carries its user and inbox prefix).
        trusted_keys: The stages' public keys (``<state_dir>/signing/public.json``, what
            ``qbus up`` writes): a final event then counts only when the stage allowed to
            write it signed it; a forged one is skipped (docs/security.md).
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        config: BusConfig | None = None,
        producer: str = "qbus.client",
        name: str = "qbus-client",
        tenant: str = "",
        trusted_keys: str | Path | None = None,
    ) -> None:
        self.config = config or BusConfig(url=url)
        self.tenant = tenant
        self.trust = Trust.load(trusted_keys) if trusted_keys else None
        self.producer = producer
        self.name = name
        self._bus: Bus | None = None
        self._streams: set[ResultStream] = set()

    @property
    def bus(self) -> Bus:
        """The underlying connection.

        Raises:
            RuntimeError: The client is not connected.
        """
        if self._bus is None:
            raise RuntimeError("client is not connected: use 'async with Client(…)' or connect()")
        return self._bus

    async def connect(self) -> Client:
        """Connect (idempotent).

        Raises:
            BusError: The server cannot be reached.
        """
        if self._bus is None:
            # Tracing from the OTEL_* variables, unless the application set up its own.
            try:
                tracing.setup(self.name)
            except QbusError as exc:  # a bad OTEL_* setting must not stop the client
                log.warning("tracing not set up: %s", exc)
            self._bus = await Bus.connect(self.config, name=self.name)
            self._bus.trust = self.trust
        return self

    async def close(self) -> None:
        """Close open result streams and the connection (idempotent)."""
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.close()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def submit(
        self,
        circuit: Any,
        *,
        shots: int = 1024,
        method: str = "sample",
        seed: int | None = None,
        engine: str = "auto",
        optimize: bool = True,
        parameters: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
        format: str = "auto",
        job_id: str | None = None,
        traceparent: str | None = None,
        **options: Any,
    ) -> Job:
        """Publish a job and return its handle once the server has stored it.

        Args:
            circuit: OpenQASM/JSON text, a Circuit, an IR dict or a framework circuit
                (see ``circuit_fields``).
            shots, method, seed, engine, optimize, parameters, labels: See JobSubmitted.
            format: Format of text input.
            job_id: Your own id (used once: a second submission under it is refused,
                and its ``result()`` is that ``duplicate_job_id`` refusal); a random one
                by default.
            traceparent: W3C trace context to continue; a new trace by default.
            **options: Any other JobSubmitted field (``hypervisor``, ``memory_mb`` …), so
                fields added to the protocol are usable without a client change. A sweep
                is ``method="sweep", sweep=[{"theta": 0.1}, …]`` (one result per point,
                in ``JobCompleted.sweep_results``), with ``observables=[…]`` for
                expectation values instead of counts.

        Raises:
            SchemaError, TypeError, MissingOptionalLibraryError: See ``circuit_fields``.
            msgspec.ValidationError: An option of the wrong type or a bad job id.
        """
        fields = circuit_fields(circuit, format)
        if self.tenant:
            options.setdefault("tenant", self.tenant)
        unknown = set(options) - (set(JobSubmitted.__struct_fields__) - _NOT_OPTIONS)
        if unknown:
            # msgspec would silently ignore unknown names (forward compatibility); a typo
            # here deserves an error instead. Envelope and circuit fields are set above.
            raise TypeError(f"unknown job options: {', '.join(sorted(unknown))}")
        event = msgspec.convert(
            {
                "type": "job.submitted",
                "event_id": new_event_id(),
                "job_id": job_id or new_job_id(),
                "producer": self.producer,
                "shots": shots,
                "method": method,
                "seed": seed,
                "engine": engine,
                "optimize": optimize,
                "parameters": dict(parameters or {}),
                "labels": dict(labels or {}),
                **options,
                **fields,
            },
            JobSubmitted,
            from_attributes=True,  # lets the Circuit struct through as it is
        )
        if traceparent is None and not tracing.enabled():
            traceparent = new_traceparent()  # no spans here, but the stages may trace
        # With tracing on, the publish is a PRODUCER span: the child of ``traceparent``
        # or of the application's current span, and the parent of the ingest span.
        with tracing.produce(
            self.bus.subjects.submit,
            traceparent=traceparent,
            attributes={tracing.JOB_ID: event.job_id, tracing.MESSAGE_ID: event.event_id},
        ) as headers:
            sequence = await submit(self.bus, event, headers=headers)
        return Job(self, event.job_id, sequence, headers.get("traceparent", ""), event.event_id)

    def job(self, job_id: str) -> Job:
        """A handle on a job submitted elsewhere (its ``sequence`` is 0: unknown)."""
        return Job(self, job_id, 0, "")

    def results(
        self,
        job_filter: str = "*",
        *,
        start_sequence: int | None = None,
        start_time: datetime.datetime | None = None,
        idle_timeout: float | None = None,
    ) -> ResultStream:
        """Final events on ``qbus.result.<job_filter>``, from an ephemeral ordered consumer.

        Args:
            job_filter: A job id, or ``*`` for every job.
            start_sequence: Replay from this event-log sequence (1 = the beginning).
            start_time: Replay from this time (naive datetimes are UTC).
            idle_timeout: End the iteration after this long without an event (for
                "everything so far"); by default it waits for ever.

        Without a start, only results published after the stream starts are delivered;
        use ``async with`` (or ``await stream.start()``) before submitting to see them.
        """
        stream = ResultStream(
            self.bus,
            job_filter,
            start_sequence=start_sequence,
            start_time=start_time,
            idle_timeout=idle_timeout,
        )
        # The client closes streams left open; a closed stream unregisters itself.
        self._streams.add(stream)
        stream._on_close = self._streams.discard
        return stream


class SyncClient:
    """A blocking client: the async ``Client`` on an event loop in its own thread.

    One loop thread per client means it works from any thread, including inside code
    that already runs an event loop (notebooks), where ``asyncio.run`` would fail.

    Args:
        url, config, producer, name: See ``Client``.
        timeout: Default seconds for connect and for each call without its own timeout.
    """

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, timeout: float = 60.0, **kwargs: Any):
        self._client = Client(url, **kwargs)
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="qbus-sync-client", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._client.connect)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, fn: Callable[[], Awaitable[T]], timeout: float | None = _DEFAULT) -> T:
        """Run ``fn()`` on the loop thread; ``timeout`` None waits for ever."""
        if not self._thread.is_alive():
            raise RuntimeError("SyncClient is closed")

        async def run() -> T:
            return await fn()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(self._timeout if timeout is _DEFAULT else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("qbus call timed out") from None

    def submit(self, circuit: Any, **options: Any) -> SyncJob:
        """Submit a job; see ``Client.submit``."""
        job = self._call(lambda: self._client.submit(circuit, **options))
        return SyncJob(self, job)

    def job(self, job_id: str) -> SyncJob:
        """A handle on a job submitted elsewhere."""
        return SyncJob(self, self._client.job(job_id))

    def results(self, job_filter: str = "*", **options: Any) -> Iterator[Delivery]:
        """Final events, as ``Client.results`` (same options); closes its consumer when done."""
        stream = self._call(lambda: self._client.results(job_filter, **options).start())
        try:
            while True:
                try:
                    # The stream's own idle_timeout bounds each wait; no extra limit here.
                    yield self._call(stream.__anext__, timeout=None)
                except StopAsyncIteration:
                    return
        finally:
            if self._thread.is_alive():
                self._call(stream.aclose)

    def close(self) -> None:
        """Close the connection and stop the loop thread (idempotent)."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._client.close)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncJob:
    """A submitted job, blocking; see ``Job``."""

    def __init__(self, client: SyncClient, job: Job) -> None:
        self._client = client
        self._job = job
        self.job_id = job.job_id
        self.sequence = job.sequence
        self.traceparent = job.traceparent

    def __repr__(self) -> str:
        return f"SyncJob({self.job_id!r}, sequence={self.sequence})"

    def result(self, timeout: float = 60.0) -> Event:
        """The job's final event; see ``Job.result``."""
        return self._client._call(lambda: self._job.result(timeout), timeout=timeout + 5)

    def events(self, timeout: float = 60.0) -> list[Delivery]:
        """Every event of the job up to and including its final one."""

        async def collect() -> list[Delivery]:
            return [d async for d in self._job.events(follow=True, timeout=timeout)]

        return self._client._call(collect, timeout=None)
