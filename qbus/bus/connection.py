"""Connect to NATS and provision qbus's stream, KV buckets and object store, idempotently.

On a cluster (docs/operations.md, "A cluster") the client is given every server and
reconnects to any; provisioning creates each asset with ``[bus] replicas``, raises the
replicas of one that has fewer, and otherwise leaves what exists alone, reporting where
it differs from what qbus would make (``Bus.mismatches``, ``qbus doctor``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.api import PubAck
from nats.js.errors import BucketNotFoundError, NotFoundError

from qbus.bus.acks import PubAcks
from qbus.bus.assets import Mismatch, placement, reconcile_replicas, stream_mismatches
from qbus.bus.config import BusConfig
from qbus.bus.jobstate import JobState, decode_state
from qbus.bus.ledger import DEFAULT_CHUNKS_TTL, chunks_bucket_config
from qbus.bus.retry import retrying
from qbus.bus.signing import HEADER as SIGNATURE
from qbus.bus.signing import Signer, Trust
from qbus.bus.subjects import Subjects
from qbus.errors import BusUnreachableError
from qbus.observability import tracing
from qbus.schemas.enums import PRIORITIES
from qbus.schemas.events import (
    CircuitIngested,
    Event,
    JobCompleted,
    JobFailed,
    JobRejected,
    encode,
)

MAX_MSG_SIZE = 16 * 1024 * 1024
# Seconds between the client's pings, and pings unanswered before it gives the server up.
PING_INTERVAL = 2
MAX_OUTSTANDING_PINGS = 3
WRONG_LAST_SEQUENCE = 10071  # JetStream error code for a failed expected-sequence check

# A job has one ingested event and one final event, whoever publishes them: the server
# refuses a second message on the job's subject for these (a retried submission under a
# used job id, a stage racing another). Redeliveries of the same event are refused too
# and recognised by their id (see StageRunner).
FIRST_ONLY = (CircuitIngested, JobCompleted, JobFailed, JobRejected)
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
# The subject filter the expected-last check applies to (nats-server 2.11+); without it,
# the message's own subject.
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
_state_encoder = msgspec.json.Encoder()


class _Names(msgspec.Struct):
    """A page of ``$JS.API.CONSUMER.NAMES`` (or its error)."""

    consumers: list[str] | None = None
    total: int = 0
    error: dict | None = None


_decode_names = msgspec.json.Decoder(_Names).decode


def _names_request(offset: int) -> bytes:
    return msgspec.json.encode({"offset": offset})


def claims_job(event: Event) -> bool:
    """Whether ``event`` is the first event of a job id: its ``circuit.ingested``, or its
    rejection at ingest (not a refusal, which is keyed by the message, not the job)."""
    if isinstance(event, CircuitIngested):
        return True
    return isinstance(event, JobRejected) and event.stage == "ingest" and event.refusal is None


log = logging.getLogger("qbus.bus")


async def _log_error(exc: Exception) -> None:
    # nats-py's default prints a traceback per failed attempt; one line says enough.
    log.info("nats: %s: %s", type(exc).__name__, exc)


class _QuietSslEof(logging.Filter):
    # asyncio warns "returning true from eof_received() has no effect when using ssl" for
    # every TLS connection nats-py makes: harmless, and alarming in an operator's log.
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


def _tls_context(config: BusConfig) -> ssl.SSLContext:
    """A client TLS context trusting ``tls_ca`` (docs/security.md), with a client
    certificate when one is configured."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _QuietSslEof) for f in asyncio_log.filters):
        asyncio_log.addFilter(_QuietSslEof())
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca)
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


class Bus:
    """A connection to NATS plus qbus's names on it.

    Attributes:
        nc: The NATS connection.
        js: Its JetStream context.
        config: The bus configuration.
        subjects: Subject names under the configured prefix.
    """

    def __init__(self, nc: NATS, config: BusConfig) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        # Every stored event and state write goes through here (bus/acks.py).
        self.acks = PubAcks(nc)
        self.config = config
        self.subjects = Subjects(config.prefix)
        # A stage's key, signing what it publishes, and the stages' public keys, checking
        # final events read from the log (qbus/bus/signing.py); None: unsigned, unchecked.
        self.signer: Signer | None = None
        self.trust: Trust | None = None
        # Where the assets on the server differ from what provisioning would make
        # (filled by ``provision``; reported, never changed).
        self.mismatches: list[Mismatch] = []

    @classmethod
    async def connect(
        cls,
        config: BusConfig,
        *,
        name: str = "qbus",
        connect_timeout: float = 10.0,
        retry_for: float = 0.0,
        **options: Any,
    ) -> Bus:
        """Connect to one of the servers in ``config``.

        Args:
            retry_for: Seconds to keep trying, with backoff and jitter, while no server
                answers (a stage starting while its server restarts); 0: try once.

        Raises:
            BusError: No server can be reached.
        """
        return await retrying(
            f"connecting to NATS at {config.url}",
            lambda: cls._connect_once(config, name, connect_timeout, options),
            retry_for=retry_for,
        )

    @classmethod
    async def _connect_once(
        cls, config: BusConfig, name: str, connect_timeout: float, options: dict[str, Any]
    ) -> Bus:
        servers = config.server_urls
        kwargs: dict[str, Any] = {
            "servers": servers,
            "name": name,
            "connect_timeout": 5,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.5,
            # nats-py's ordered consumers can leave a consumer-recreate request behind
            # at unsubscribe; a long drain would wait out its timeout on close.
            "drain_timeout": 3,
            "error_cb": _log_error,
            # A server that stops answering without closing the socket (a stalled or
            # partitioned node) is noticed after PING_INTERVAL * MAX_OUTSTANDING_PINGS
            # seconds and the client moves to another node; nats-py's default is 4 min.
            "ping_interval": PING_INTERVAL,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        }
        if config.user:
            kwargs["user"] = config.user
            kwargs["password"] = config.password
        if config.token:
            kwargs["token"] = config.token
        if config.creds:
            kwargs["user_credentials"] = config.creds
        if config.inbox_prefix:
            kwargs["inbox_prefix"] = config.inbox_prefix
        if config.tls_ca or config.tls_cert:
            kwargs["tls"] = _tls_context(config)
            kwargs["tls_hostname"] = urlsplit(servers[0]).hostname
        kwargs.update(options)
        try:
            # nats-py applies unlimited reconnects to the first connect too, which would
            # hang on a wrong URL: connect once without them, then turn them on so a
            # running stage rides through server restarts.
            nc = await asyncio.wait_for(
                nats.connect(**kwargs, allow_reconnect=False), timeout=connect_timeout
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            reason = str(exc) or type(exc).__name__
            where = ", ".join(servers)
            raise BusUnreachableError(f"cannot connect to NATS at {where}: {reason}") from exc
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        return cls(nc, config)

    async def close(self) -> None:
        """Drain (deliver what is pending, then close) the connection."""
        if self.nc.is_connected:
            try:
                await self.nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self.nc.close()
        elif not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- provisioning -----------------------------------------------------------------

    async def provision(
        self,
        cache_ttl: float = 86_400.0,
        chunks_ttl: float = DEFAULT_CHUNKS_TTL,
        *,
        retry_for: float = 60.0,
    ) -> None:
        """Create the event-log stream, job-state KV, object store and audit stream, or
        check the ones that exist (``mismatches``).

        Args:
            retry_for: Seconds to keep retrying, with backoff and jitter, while the
                server or cluster cannot answer yet (restarting, electing a leader).

        Raises:
            nats.errors.Error: The server refused an asset, or kept failing past
                ``retry_for``.
        """
        await retrying(
            "provisioning the stream and buckets",
            lambda: self._provision_once(cache_ttl, chunks_ttl),
            retry_for=retry_for,
        )
        for mismatch in self.mismatches:
            log.warning("provisioning: %s", mismatch.describe())

    async def _provision_once(self, cache_ttl: float, chunks_ttl: float) -> None:
        cfg = self.config
        self.mismatches = []
        await self._ensure_stream(
            js_api.StreamConfig(
                name=cfg.stream,
                subjects=[self.subjects.all],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=cfg.duplicate_window,
                max_msg_size=MAX_MSG_SIZE,
                allow_direct=True,
                description="qbus event log: every event of every job",
            )
        )
        await self._ensure_stream(
            js_api.StreamConfig(
                name=cfg.audit_stream,
                subjects=[cfg.audit_subject],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=cfg.duplicate_window,
                allow_direct=True,
                description="qbus audit hash chain over the event log",
            )
        )
        await self._ensure_stream(
            js_api.StreamConfig(
                name=cfg.tenant_stream,
                subjects=[self.subjects.tenant_all()],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=cfg.duplicate_window,
                max_msg_size=MAX_MSG_SIZE,
                allow_direct=True,
                description="each tenant's copy of its jobs' final events (docs/security.md)",
            )
        )
        await self._ensure_stream(
            js_api.StreamConfig(
                name=cfg.advisory_stream,
                subjects=[cfg.max_deliveries_advisories],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                # An advisory is handled within seconds; a week covers any outage.
                max_age=7 * 86_400.0,
                description="max-deliveries advisories of the event log's consumers, "
                "turned into dead letters by the stages (qbus/bus/deadletter.py)",
            )
        )
        buckets = (
            (cfg.kv_jobs, 8, None, "qbus job state"),
            (cfg.kv_chain, 1, None, "qbus chain listener cursor and pending anchor batches"),
            # The result cache (docs/routing.md); its TTL is fixed when it is created.
            (cfg.kv_cache, 1, cache_ttl, "qbus result cache"),
        )
        for bucket, history, ttl, description in buckets:
            await self._ensure_bucket(
                js_api.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl,
                    storage=js_api.StorageType.FILE,
                    description=description,
                )
            )
        await self._ensure_bucket(chunks_bucket_config(cfg.kv_chunks, chunks_ttl))
        await self._ensure_object_store()

    async def _ensure_object_store(self) -> None:
        # Unlike the buckets, the result store's TTL and quota are set again each time:
        # a store made before they existed would otherwise stay unbounded.
        cfg = self.config
        ttl, quota = cfg.results_ttl, cfg.results_max_bytes or -1
        try:
            await self.js.object_store(cfg.object_store)
        except (BucketNotFoundError, NotFoundError):
            await self.js.create_object_store(
                cfg.object_store,
                js_api.ObjectStoreConfig(
                    bucket=cfg.object_store,
                    description="qbus large results (state vectors)",
                    storage=js_api.StorageType.FILE,
                    ttl=ttl,
                    max_bytes=quota,
                    replicas=cfg.replicas,
                    placement=placement(cfg),
                ),
            )
            return
        await self._check_replicas(f"OBJ_{cfg.object_store}", "object store")
        stream = (await self.js.stream_info(f"OBJ_{cfg.object_store}")).config
        if (stream.max_age or 0.0) != ttl or stream.max_bytes != quota:
            # The server requires the dedupe window to fit in the TTL (it is 2 min).
            window = min(stream.duplicate_window or ttl, ttl) if ttl else stream.duplicate_window
            await self.js.update_stream(
                dataclasses.replace(stream, max_age=ttl, max_bytes=quota, duplicate_window=window)
            )

    async def _ensure_bucket(self, config: js_api.KeyValueConfig) -> None:
        # Created once, never updated: a bucket's settings (TTL, history) are fixed at
        # creation, and an operator may have tuned them since. Only its replicas are
        # raised to [bus] replicas.
        try:
            await self.js.key_value(config.bucket)
        except BucketNotFoundError:
            config = dataclasses.replace(
                config, replicas=self.config.replicas, placement=placement(self.config)
            )
            await self.js.create_key_value(config)
            return
        await self._check_replicas(f"KV_{config.bucket}", "KV bucket")

    async def _check_replicas(
        self, stream: str, kind: str, info: js_api.StreamInfo | None = None
    ) -> None:
        """Raise the replicas of an existing asset's stream to ``[bus] replicas``;
        record more replicas than configured, or other placement tags, as mismatches."""
        info = info or await self.js.stream_info(stream)
        raised, mismatches = reconcile_replicas(info.config, self.config, kind)
        self.mismatches += mismatches
        if raised is not None:
            log.warning(
                "provisioning: raising %s %s to %d replicas",
                kind,
                stream,
                raised.num_replicas,
            )
            await self.js.update_stream(raised)

    async def _ensure_stream(self, config: js_api.StreamConfig) -> None:
        # An existing stream is not updated to qbus's settings: an operator may have
        # tuned it (more replicas, a longer dedupe window); differences are reported.
        config = dataclasses.replace(
            config, num_replicas=self.config.replicas, placement=placement(self.config)
        )
        try:
            info = await self.js.stream_info(config.name)
        except NotFoundError:
            await self.js.add_stream(config)
            return
        self.mismatches += stream_mismatches(info.config, config)
        await self._check_replicas(config.name, "stream", info)

    async def ensure_consumer(
        self,
        durable: str,
        filter_subjects: list[str],
        *,
        max_ack_pending: int = 20_000,
    ) -> None:
        """Create or update a durable pull consumer on the event log."""
        cfg = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=self.config.ack_wait,
            max_deliver=self.config.max_deliver,
            max_ack_pending=max_ack_pending,
            max_waiting=512,
        )
        if len(filter_subjects) == 1:
            cfg.filter_subject = filter_subjects[0]
        else:
            cfg.filter_subjects = filter_subjects
        await self.js.add_consumer(self.config.stream, cfg)

    def executor_durable(self, engine: str, priority: str = "normal") -> str:
        """The durable consumer every executor of ``engine`` shares, per priority.

        Normal jobs keep the plain ``execute-<engine>`` name; ``high`` and ``low`` ones
        have their own (``execute_high-<engine>``), which ``deployed_engines`` skips, and
        so has the heavy lane (``priority="heavy"``: ``execute_heavy-<engine>``).
        """
        if priority == "normal":
            return f"execute-{engine}"
        return f"execute_{priority}-{engine}"

    async def ensure_executor(self, engine: str) -> None:
        """Create the executor consumers of ``engine``: the engine is part of this bus.

        Jobs routed to it wait in the stream until an executor process binds, so a
        deployment creates these before any job can be routed (``qbus up`` does). One
        consumer per priority, and one for the heavy lane (docs/routing.md).
        """
        for priority in PRIORITIES:
            await self.ensure_consumer(
                self.executor_durable(engine, priority),
                [self.subjects.exec(engine, priority=priority)],
            )
        await self.ensure_consumer(
            self.executor_durable(engine, "heavy"), [self.subjects.exec(engine, lane="heavy")]
        )

    async def executor_backlog(self, engine: str, lane: str = "light") -> int:
        """Messages waiting for or held by ``engine``'s executors in ``lane``.

        ``light``: every priority's consumer; ``heavy``: the heavy lane's. Each lane has
        its own slots in every executor, so a light job waits only behind light ones.
        """
        durables = (
            [self.executor_durable(engine, "heavy")]
            if lane == "heavy"
            else [self.executor_durable(engine, p) for p in PRIORITIES]
        )
        total = 0
        for durable in durables:
            try:
                info = await self.js.consumer_info(self.config.stream, durable)
            except NotFoundError:
                continue
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total

    async def deployed_engines(self) -> set[str]:
        """Engines that have an executor consumer on this bus."""
        return {
            name.removeprefix("execute-")
            for name in await self.consumer_names()
            if name.startswith("execute-")
        }

    async def consumer_names(self) -> list[str]:
        """Names of the event log's consumers.

        Asks for names, not infos: on a cluster with a node down, the server answers a
        consumer-info list only after waiting 4 s for that node's consumers, and the
        router asks every couple of seconds (a node loss stalled routing for as long
        as the node was away). The names come from the cluster's metadata at once.
        """
        names: list[str] = []
        while True:
            reply = await self.nc.request(
                f"$JS.API.CONSUMER.NAMES.{self.config.stream}",
                _names_request(len(names)),
                timeout=5,
            )
            page = _decode_names(reply.data)
            if page.error is not None:
                nats.js.errors.APIError.from_error(page.error)
            names += page.consumers or []
            if not page.consumers or len(names) >= page.total:
                return names

    # -- publishing -------------------------------------------------------------------

    def headers_for(self, event: Event, extra: dict[str, str] | None = None) -> dict[str, str]:
        """NATS headers of ``event``: its id for dedupe, guards, and the trace context.

        The W3C trace context is ``extra``'s when it has one (a stage passes its span's),
        else the current span's when tracing is on.
        """
        headers = {"Nats-Msg-Id": event.event_id}
        if isinstance(event, FIRST_ONLY):
            headers[EXPECTED_LAST] = "0"
        if claims_job(event):
            # A job id is used by one submission: what starts a job is refused when any
            # subject of the job holds an event already (another submission's rejection or
            # events), not only its own. One check in the server's publish path instead
            # of a read per submission (StageRunner handles the refusal).
            headers[EXPECTED_SUBJECT] = self.subjects.job_kinds(event.job_id)
        if extra:
            headers.update(extra)
        if "traceparent" not in headers and tracing.enabled():
            tracing.inject(headers)
        return headers

    def _send(self, event: Event, headers: dict[str, str] | None) -> Awaitable[PubAck]:
        """Publish ``event`` with its headers, signed when this bus has a stage's key."""
        subject = self.subjects.for_event(event)
        payload = encode(event)
        all_headers = self.headers_for(event, headers)
        if self.signer is not None:
            all_headers[SIGNATURE] = self.signer.header(
                subject, all_headers["Nats-Msg-Id"], payload
            )
        return self.acks.publish(subject, payload, all_headers)

    async def publish(self, event: Event, *, headers: dict[str, str] | None = None) -> int:
        """Publish one event and wait for the server's ack; returns its stream sequence."""
        ack = await self._send(event, headers)
        return ack.seq

    async def publish_async(
        self, event: Event, *, headers: dict[str, str] | None = None
    ) -> asyncio.Future:
        """Publish without waiting; await the returned future for the server's ack.

        A task around ``js.publish`` rather than nats-py's ``publish_async``: in nats-py
        2.16 an error reply (e.g. a refused expected-sequence check) raises inside its
        reply callback and leaves that future pending for ever.
        """
        return asyncio.ensure_future(self._send(event, headers))

    async def put_state_async(
        self, job_id: str, state: JobState, *, only_new: bool = False
    ) -> asyncio.Future:
        """Write a job's state to the KV bucket without waiting for the ack.

        With ``only_new`` the server refuses the write (``WRONG_LAST_SEQUENCE``) when the
        job has a state already.
        """
        headers = {EXPECTED_LAST: "0"} if only_new else None
        return asyncio.ensure_future(
            self.acks.publish(
                f"$KV.{self.config.kv_jobs}.{job_id}", _state_encoder.encode(state), headers
            )
        )

    async def job_state(self, job_id: str) -> JobState | None:
        """A job's current state, or None when the bus has never seen it."""
        kv = await self.js.key_value(self.config.kv_jobs)
        try:
            entry = await kv.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return decode_state(entry.value)
