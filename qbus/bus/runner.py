"""The one place where messages are acked: runs a stage handler on a durable pull consumer.

A handler turns one event into events (pure, no NATS); it never acks. The runner:

* fetches a batch, decodes each message with one long-lived decoder;
* calls the handler; maps its outcome — events, ``Reject`` (→ JobRejected), ``Fail``
  (→ JobFailed), ``Retry`` (→ nak with delay), anything else (→ error log + metric +
  nak with backoff; on the last of ``max_deliver`` deliveries a DeadLetter and the job's
  JobFailed ``dead_lettered``, then term: qbus/bus/deadletter.py);
* publishes every output with ``Nats-Msg-Id`` = event id (async, batched acks) plus the
  implied job state, and acks an input only after all its outputs are stored — so a crash
  anywhere means redelivery, and the deterministic output ids mean the copies are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

import msgspec
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js.errors import APIError, NotFoundError

from qbus.bus import deadletter, tenancy
from qbus.bus.config import RetriesConfig
from qbus.bus.connection import (
    EXPECTED_LAST,
    EXPECTED_SUBJECT,
    WRONG_LAST_SEQUENCE,
    Bus,
    claims_job,
)
from qbus.bus.job_ids import JobIds
from qbus.bus.job_log import REAL_FINAL_WAIT, first_stored
from qbus.bus.jobstate import state_for
from qbus.bus.pull import PullConsumer
from qbus.bus.subjects import refusal_key as subjects_refusal_key
from qbus.errors import Fail, Refuse, Reject, Retry, validation_path
from qbus.frontends.bounds import UNDECODABLE, TooDeep, decode_event, shallow
from qbus.observability import metrics, tracing
from qbus.schemas.enums import allowed_values
from qbus.schemas.events import (
    EVENT_TYPES,
    FINAL_EVENTS,
    Event,
    JobFailed,
    JobRejected,
    answer,
    derived_event_id,
    encode,
    is_valid_job_id,
    tag_of,
)

log = logging.getLogger("qbus.runner")

RESULT_TOO_LARGE = "result_too_large"
"""The JobFailed code of a job whose stage made an event too big for any message."""

TRACE_HEADERS = tracing.TRACE_HEADERS


class Handler(Protocol):
    """A stage's logic: one event in, the events it causes out."""

    async def handle(self, event: Event) -> Sequence[Event]: ...


class _Envelope(msgspec.Struct):
    """The envelope fields of a message that did not decode as an event, of any type."""

    job_id: object = None
    event_id: object = None
    type: object = None


_lenient = msgspec.json.Decoder(_Envelope)
EVENT_CLASSES = {tag_of(t): t for t in EVENT_TYPES}
EVENT_TAGS = frozenset(EVENT_CLASSES)

# A submission field outside its closed set (qbus/schemas/enums.py) fails the decode; it
# keeps the code ingest gave it when it checked the field by hand, so clients see the
# same codes (docs/protocol.md). Keys are error paths with list indices dropped.
_ENUM_CODES = {
    "$.method": "unknown_method",
    "$.format": "unknown_format",
    "$.hypervisor": "unknown_hypervisor",
    "$.priority": "invalid_priority",
    "$.dynamics.collapse[].kind": "invalid_dynamics",
}
_INDEX = re.compile(r"\[\d+\]")
# A resource limit that is not a positive number (schemas.events.MemoryLimit,
# SecondsLimit) has its own code, as the field names a limit rather than a value set.
_LIMIT_PATHS = frozenset({"$.memory_mb", "$.cpu_seconds", "$.wall_seconds"})


def schema_rejection(tag: str, text: str, where: str | None) -> tuple[str, str]:
    """The code and message for an event of a known ``tag`` that does not match its schema.

    Args:
        tag: The message's event type.
        text: msgspec's error text (it ends with the path).
        where: The path of the bad field, when the error names one.

    Returns:
        ``invalid_schema``, or for a field with a closed set of values its own code
        (``unknown_method`` …) and a message listing the values it allows, or
        ``invalid_limit`` for a resource limit that is not positive.
    """
    message = f"event does not match its schema: {text}"
    if where in _LIMIT_PATHS:
        field = where.removeprefix("$.")
        return "invalid_limit", f"{message}; {field} must be a positive number (or left out)"
    allowed = allowed_values(EVENT_CLASSES[tag], where) if where else None
    if where is None or allowed is None:
        return "invalid_schema", message
    code = _ENUM_CODES.get(_INDEX.sub("[]", where), "invalid_schema")
    return code, f"{message}; {where.removeprefix('$.')} must be one of {', '.join(allowed)}"


def _envelope(data: bytes) -> _Envelope:
    """What can be read of an undecodable message's envelope (all None when nothing)."""
    try:
        # Of a payload nested too deep, only the top level: it decodes without recursing.
        return _lenient.decode(shallow(data))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Envelope()


def fallback_job_id(msg: Msg, envelope: _Envelope | None = None) -> tuple[str, str]:
    """Best-effort (job id, event id) of a message that does not decode as an event.

    A rejection must still land on a subject the submitter can watch: use the job id in
    the JSON when it is usable, else the message id header, else the stream sequence.
    """
    envelope = envelope or _envelope(msg.data)
    job_id, event_id = envelope.job_id, envelope.event_id
    seq = msg.metadata.sequence.stream if msg.reply else 0
    if not (isinstance(event_id, str) and event_id):
        event_id = (msg.headers or {}).get("Nats-Msg-Id") or f"seq-{seq}"
    if not (isinstance(job_id, str) and is_valid_job_id(job_id)):
        job_id = f"invalid-{seq}"
    return job_id, event_id


def refusal_key(msg: Msg) -> str:
    """The key a refusal of ``msg`` is published under: ``subjects.refusal_key`` of its
    ``Nats-Msg-Id`` and stream sequence, as its sender computes it."""
    seq = msg.metadata.sequence.stream if msg.reply else 0
    return subjects_refusal_key((msg.headers or {}).get("Nats-Msg-Id", ""), seq)


class StageRunner:
    """Runs ``handler`` on the durable consumer ``durable`` filtered to ``subjects``.

    Args:
        bus: Connected bus.
        stage: Stage name (``ingest``, ``route`` …): metrics label and producer name.
        durable: Durable consumer name; copies of a stage share it and split the work.
        subjects: Filter subjects.
        handler: The stage's logic.
        batch: Messages fetched at once.
        heartbeat: Tell the server "still working" every ack_wait/3 while a handler runs,
            so a long engine run is not redelivered to another copy meanwhile. For stages
            whose handlers may take longer than ``ack_wait`` (and yield to the loop).
        consumer_poll: Seconds between reads of the consumer's pending counts into the
            ``qbus_consumer_*`` gauges (0: never).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        stage: str,
        durable: str,
        subjects: list[str],
        handler: Handler,
        batch: int = 256,
        heartbeat: bool = False,
        consumer_poll: float = 5.0,
        retries: RetriesConfig | None = None,
    ) -> None:
        self.bus = bus
        self.stage = stage
        self.durable = durable
        self.subjects = subjects
        self.handler = handler
        self.batch = batch
        self.heartbeat = heartbeat
        self.consumer_poll = consumer_poll
        self._latency = metrics.STAGE_LATENCY.labels(stage)
        self.producer = f"qbus.{stage}"
        self._stopping = asyncio.Event()
        self.processed = 0
        # Redelivery backoff after a handler error, and dead letters (bus/deadletter.py).
        self.retries = retries or RetriesConfig()
        self.last_errors = deadletter.LastErrors()
        self.job_ids = JobIds(bus)

    def dead_letter_watcher(self, consumers: list[str]) -> asyncio.Task | None:
        """Start turning max-deliveries advisories for ``consumers`` into dead letters
        (None when ``[retries] dead_letter_advisories`` is off); cancel the task to stop."""
        if not self.retries.dead_letter_advisories:
            return None
        watcher = deadletter.AdvisoryWatcher(
            self.bus,
            self.stage,
            consumers,
            self.last_errors,
            grace=self.retries.dead_letter_grace,
        )
        return asyncio.create_task(watcher.run(), name=f"dlq-{self.stage}")

    def consumer_poller(self) -> asyncio.Task | None:
        """Start exporting this stage's consumer lag every ``consumer_poll`` seconds (None
        when that is off); cancel the task to stop."""
        if self.consumer_poll <= 0:
            return None
        return asyncio.create_task(
            metrics.poll_consumer(
                self.bus.js, self.bus.config.stream, self.stage, self.durable, self.consumer_poll
            )
        )

    async def stop_helpers(self, poller: asyncio.Task | None, watcher: asyncio.Task | None) -> None:
        """Stop what ``consumer_poller`` and ``dead_letter_watcher`` started."""
        if poller is not None:
            poller.cancel()
        await deadletter.stop_watcher(watcher)

    def close_handler(self) -> None:
        """Let the handler release what it owns (the executor's sandbox workers)."""
        close = getattr(self.handler, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        """Finish the current batch, then return from ``run``."""
        self._stopping.set()

    async def start_handler(self) -> None:
        """Let the handler set up what it needs on the bus (a watch) before any message."""
        start = getattr(self.handler, "start", None)
        if start is not None:
            await start()

    async def run(self) -> None:
        """Consume until ``stop()``."""
        await self.bus.ensure_consumer(self.durable, self.subjects)
        await self.start_handler()
        consumer = await PullConsumer(self.bus, self.durable, batch=self.batch).start()
        log.info("stage %s consuming %s as %s", self.stage, self.subjects, self.durable)
        watcher = self.dead_letter_watcher([self.durable])
        poller = self.consumer_poller()
        try:
            while not self._stopping.is_set():
                msgs = await consumer.next_batch(timeout=0.5)
                if msgs:
                    await self.process(msgs)
        finally:
            await self.stop_helpers(poller, watcher)
            await consumer.stop()
            self.close_handler()

    async def process(self, msgs: list[Msg]) -> None:
        """Handle a batch; publish outputs, then their job states; then settle each input."""
        keepalive = asyncio.create_task(self._keepalive(msgs)) if self.heartbeat else None
        try:
            outcomes = [await self._handle(msg) for msg in msgs]
        finally:
            if keepalive is not None:
                keepalive.cancel()
        sent: list[tuple[int, Event, Awaitable]] = []
        for index, (_, events, _, headers) in enumerate(outcomes):
            for event in events:
                sent.append((index, event, await self.bus.publish_async(event, headers=headers)))
        results = await asyncio.gather(*(f for _, _, f in sent), return_exceptions=True)
        failed: set[int] = set()
        stored: list[tuple[int, Event]] = []
        # Events the log already held (a redelivered or resent input): their state was
        # written when they were first stored and may have moved on since; written again
        # only where the job has none, so a resent submission cannot undo "completed".
        repeated: set[str] = set()
        for (index, event, _), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                stored.append((index, event))
                if getattr(result, "duplicate", False):
                    repeated.add(event.event_id)
            elif _is_first_only_conflict(result):
                # The job's subject already holds its one ingested/final event.
                after = await self._after_conflict(outcomes[index][0], event)
                if after is None:
                    failed.add(index)
                else:
                    kept, already = after
                    stored.extend((index, e) for e in kept)
                    if already:
                        repeated.add(event.event_id)
            elif isinstance(result, MaxPayloadError):
                # Too big for any message: another delivery would only make it again.
                failure = await self._too_large(outcomes[index][0], event)
                if failure is None:
                    failed.add(index)
                else:
                    stored.append((index, failure))
            else:
                failed.add(index)
        # State after the event: a refused duplicate must not overwrite the real job's state.
        states: list[tuple[int, Awaitable]] = []
        for index, event in stored:
            state = state_for(event, self.stage)
            if state is not None and index not in failed:
                only_new = event.event_id in repeated
                put = await self.bus.put_state_async(event.job_id, state, only_new=only_new)
                states.append((index, put))
            if index not in failed:
                # A tenant's running-job index and its copy of the final event.
                states.extend((index, f) for f in await tenancy.tenant_writes(self.bus, event))
        state_results = await asyncio.gather(*(f for _, f in states), return_exceptions=True)
        failed |= {
            i
            for (i, _), r in zip(states, state_results, strict=True)
            # A refused only-new state write: the job has a state already, as intended.
            if isinstance(r, BaseException) and not _is_first_only_conflict(r)
        }
        now = time.time()
        for index, (msg, events, settle, _) in enumerate(outcomes):
            if index in failed:
                log.warning(
                    "stage %s: publishing outputs failed; input will be redelivered", self.stage
                )
                if msg.reply:  # a dead letter after the last delivery says why
                    self.last_errors.note(
                        msg.metadata.consumer or self.durable,
                        msg.metadata.sequence.stream,
                        f"{self.stage} could not store its outputs",
                    )
                await msg.nak(delay=1.0)
                continue
            await settle(msg)
            for event in events:
                metrics.EVENTS_OUT.labels(self.stage, _tag(event)).inc()
            if msg.reply:
                stored_at = msg.metadata.timestamp.timestamp()
                self._latency.observe(max(0.0, now - stored_at))
        self.processed += len(msgs)

    async def _after_conflict(self, msg: Msg, event: Event) -> tuple[list[Event], bool] | None:
        """What stands once the server refused ``event`` as not the first of its kind.

        Returns:
            The events to record as stored for the job (their states are written), and
            whether ``event`` itself was there already; None when ``msg`` must be
            delivered again.
        """
        existing = await self._existing(event)
        if existing is not None and existing.event_id == event.event_id:
            # Ours: a copy from before a crash, or just stored after a forgery.
            return [event], True
        if existing is None and claims_job(event):
            # Its guard covers every subject of the job (Bus.headers_for): what is there
            # may be no other submission's, e.g. a cancel sent before the job arrived.
            claimed = await self._claim_job(event)
            if claimed is not None:
                return ([event], False) if claimed else None
        kept = [existing] if isinstance(existing, FINAL_EVENTS) else []
        # (a final event: keep the job's state that of its real end, not of this run)
        metrics.SUPERSEDED.labels(self.stage, _tag(event)).inc()
        log.info(
            "stage %s: job %s already has its %s; dropping %s",
            self.stage,
            event.job_id,
            _tag(event),
            event.event_id,
        )
        refusal = await self._refuse_duplicate(msg, event)
        if refusal is False:
            return None
        if refusal is not None:
            kept.append(refusal)
        return kept, False

    async def _claim_job(self, event: Event) -> bool | None:
        """Store ``event`` guarded on its own subject only, when no other submission holds
        its job id.

        Returns:
            True once stored; False when it could not be (deliver the input again); None
            when the job id belongs to another submission.
        """
        cause, tenant = event.causation_id or "", tenancy.tenant_of(event)
        try:
            if await self.job_ids.held(event.job_id, cause, tenant):
                return None
            own = self.bus.subjects.for_event(event)
            await self.bus.publish(event, headers={EXPECTED_SUBJECT: own})
        except Exception:
            log.warning("stage %s: cannot store %s", self.stage, event.event_id, exc_info=True)
            return False
        return True

    async def _refuse_duplicate(self, msg: Msg, event: Event) -> JobRejected | bool | None:
        """Answer a submission whose output lost the race for its job id.

        The server refuses a job's first event when a subject of the job holds one
        already (``Bus.headers_for``): another submission took the id, earlier or in the
        same batch. The loser's sender gets a ``duplicate_job_id`` refusal, not silence;
        a message that does not even decode keeps its own code (``invalid_json`` …), the
        first thing its sender has to fix.

        Returns:
            The refusal, once stored; None when ``msg`` is no submission (nothing to
            answer: a stage racing another); False when it could not be stored.
        """
        if not self.bus.subjects.is_submission(msg.subject):
            return None
        if isinstance(event, JobRejected) and event.refusal is not None:
            return None  # a refusal's key was used before: its first answer stands
        code, where = "duplicate_job_id", "$.job_id"
        message = (
            f"job id {event.job_id!r} is already used by another submission; "
            "submit under a new job id"
        )
        try:
            cause = decode_event(msg.data).event_id
        except UNDECODABLE:
            cause = event.causation_id or ""
            if isinstance(event, JobRejected):
                code, message, where = event.code, event.message, event.where
        refusal = self._refusal(msg, cause, event.job_id, code, message, where)
        metrics.REJECTIONS.labels(self.stage, code).inc()
        try:
            await self.bus.publish(refusal)
        except APIError as exc:
            if not _is_first_only_conflict(exc):  # a conflict: stored by an earlier try
                return False
        except Exception:
            log.warning("stage %s: cannot store a refusal", self.stage, exc_info=True)
            return False
        return refusal

    async def _existing(self, event: Event) -> Event | None:
        """The event already on ``event``'s subject (None when there is none, or it
        cannot be read).

        One that no stage allowed to write it signed (qbus/bus/signing.py) does not
        count: the real one before it is returned, or when there is none, ``event`` is
        stored after it and returned as the one there.
        """
        subject = self.bus.subjects.for_event(event)
        try:
            stored = await self.bus.js.get_last_msg(self.bus.config.stream, subject)
            trust = self.bus.trust
            forged = trust and trust.message_problem(subject, stored.data, stored.headers)
            if not forged:
                return decode_event(stored.data)
            log.warning("stage %s: %s holds a forged event (%s)", self.stage, subject, forged)
            with contextlib.suppress(TimeoutError):
                return await first_stored(self.bus, subject, REAL_FINAL_WAIT)
            after = {EXPECTED_LAST: str(stored.seq), EXPECTED_SUBJECT: subject}
            await self.bus.publish(event, headers=after)
            # Its state too, here: the caller writes a stored-before event's only where
            # the job has none, and this one is new.
            state = state_for(event, self.stage)
            if state is not None:
                await (await self.bus.put_state_async(event.job_id, state))
            return event
        except NotFoundError:
            # Expected for a job's first event: the server's guard covers every subject of
            # the job (Bus.headers_for), so what it found may be on another one.
            return None
        except Exception:
            log.warning("stage %s: cannot read %s", self.stage, subject, exc_info=True)
            return None

    async def _handle(
        self, msg: Msg
    ) -> tuple[Msg, Sequence[Event], Callable[[Msg], Awaitable[None]], dict[str, str] | None]:
        """Run the handler on one message; returns its outputs, how to settle it, and the
        trace headers its outputs carry."""
        if not tracing.enabled():
            # No spans: the input's trace context passes through to the outputs as is.
            events, settle = await self._outcome(msg, None)
            return msg, events, settle, _trace_headers(msg)
        with tracing.consume(self.stage, msg.subject, msg.headers, self.durable) as span:
            events, settle = await self._outcome(msg, span)
            # The outputs are the stage span's children: the next stage's span is its child.
            headers = dict(tracing.inject())
        return msg, events, settle, headers

    async def _outcome(
        self, msg: Msg, span: tracing.Span | None
    ) -> tuple[Sequence[Event], Callable[[Msg], Awaitable[None]]]:
        started = time.perf_counter()
        try:
            # Bounded before msgspec's recursive decoder sees it (qbus/frontends/bounds.py).
            event = decode_event(msg.data)
        except UNDECODABLE as exc:
            events = self._undecodable(msg, exc)
            metrics.EVENTS_PROCESSED.labels(self.stage, "unknown", "undecodable").inc()
            if span is not None:
                tracing.set_attributes(span, {tracing.OUTCOME: "undecodable"})
                tracing.mark_error(span, f"undecodable message: {exc}")
            return events, _ack
        trust = self.bus.trust
        forged = trust and trust.problem(event, msg.subject, msg.data, msg.headers)
        if forged:
            # An event of a kind only a stage writes (a step, a result, a final event)
            # that no stage allowed to write it signed: not acted on (bus/signing.py).
            tag = _tag(event)
            log.warning("stage %s: ignoring %s on %s: %s", self.stage, tag, msg.subject, forged)
            metrics.EVENTS_PROCESSED.labels(self.stage, tag, "forged").inc()
            return [], _ack
        # A submission's tenant is its subject's, whatever the payload says (security.md).
        event = tenancy.trusted_submission(event, msg.subject, self.bus.subjects)
        tag = _tag(event)
        metrics.EVENTS_IN.labels(self.stage, tag).inc()
        if self._unknown_submit_subject(msg.subject):
            metrics.REJECTIONS.labels(self.stage, "unknown_subject").inc()
            message = (
                f"{msg.subject} is not a submit subject: publish on {self.bus.subjects.submit} "
                f"or {self.bus.subjects.submit_for('<tenant>')}"
            )
            return [
                self._refusal(msg, event.event_id, event.job_id, "unknown_subject", message)
            ], _ack
        delivered = msg.metadata.num_delivered
        if span is not None:
            tracing.set_attributes(
                span,
                {
                    tracing.JOB_ID: event.job_id,
                    tracing.EVENT_TYPE: tag,
                    tracing.MESSAGE_ID: event.event_id,
                    tracing.DELIVERY_COUNT: delivered,
                },
            )
        outcome = "ok"
        try:
            events = [tenancy.stamp(e, event) for e in await self.handler.handle(event)]
            settle = _ack
        except Refuse as exc:
            outcome = "rejected"
            metrics.REJECTIONS.labels(self.stage, exc.code).inc()
            events = [
                self._refusal(msg, event.event_id, event.job_id, exc.code, exc.message, exc.where)
            ]
            settle = _ack
        except Reject as exc:
            outcome = "rejected"
            metrics.REJECTIONS.labels(self.stage, exc.code).inc()
            events = [self._rejected(event, exc.code, exc.message, exc.where)]
            settle = _ack
        except Fail as exc:
            outcome = "failed"
            events = [self._failed(event, exc.code, exc.message)]
            settle = _ack
        except Retry as exc:
            if delivered < self.bus.config.max_deliver:
                metrics.EVENTS_PROCESSED.labels(self.stage, tag, "retry").inc()
                if span is not None:
                    tracing.set_attributes(span, {tracing.OUTCOME: "retry"})
                return [], _nak_after(exc.delay)
            outcome = "failed"
            events = [
                self._failed(
                    event,
                    "retries_exhausted",
                    f"{self.stage} gave up after {delivered} attempts: {exc}",
                )
            ]
            settle = _ack
        except Exception as exc:
            outcome = "error"
            log.exception("stage %s crashed on %s of job %s", self.stage, _tag(event), event.job_id)
            metrics.HANDLER_ERRORS.labels(self.stage).inc()
            message = f"{self.stage} stage failed unexpectedly: {type(exc).__name__}: {exc}"
            seq = msg.metadata.sequence.stream
            consumer = msg.metadata.consumer or self.durable
            if delivered < self.bus.config.max_deliver:
                # Maybe passing (a dependency restarting): deliver it again after a
                # backoff; on the last delivery it becomes a dead letter.
                self.last_errors.note(consumer, seq, message)
                events, settle = [], _nak_after(self.retries.redelivery_delay(delivered))
            else:
                # The dead letter is stored before the message is termed (outputs are
                # published before any input is settled), and the job gets its one end.
                outcome = "dead_lettered"
                metrics.DEAD_LETTERS.labels(self.stage, "handler_error").inc()
                events = deadletter.dead_letter_events(
                    stage=self.stage,
                    consumer=consumer,
                    stream=msg.metadata.stream,
                    subject=msg.subject,
                    seq=seq,
                    deliveries=delivered,
                    reason=message,
                    cause="handler_error",
                    data=msg.data,
                    producer=self.producer,
                )
                settle = _term
            if span is not None:
                span.record_exception(exc)
        metrics.HANDLER_SECONDS.labels(self.stage).observe(time.perf_counter() - started)
        metrics.EVENTS_PROCESSED.labels(self.stage, tag, outcome).inc()
        if span is not None:
            tracing.set_attributes(span, {tracing.OUTCOME: outcome})
            for out in events:
                if isinstance(out, JobFailed):
                    tracing.mark_error(span, f"{out.code}: {out.message}")
        return events, settle

    async def _keepalive(self, msgs: Iterable[Msg]) -> None:
        # Messages of a batch wait their turn while earlier ones run: all of them, not
        # just the running one, must be kept from redelivery. Iterated afresh each round,
        # so a live view works too (qbus/bus/fair.py: the messages waiting in its lanes).
        interval = max(self.bus.config.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                await msg.in_progress()

    def _undecodable(self, msg: Msg, exc: Exception) -> list[Event]:
        text = str(exc)
        envelope = _envelope(msg.data)  # read once: the job to answer and the event type
        job_id, event_id = fallback_job_id(msg, envelope)
        where = validation_path(exc)
        if isinstance(exc, TooDeep):
            code, message = TooDeep.code, text
        elif not isinstance(exc, msgspec.ValidationError):  # a ValidationError is a DecodeError
            code, message = "invalid_json", f"message is not valid JSON: {text}"
        elif not (isinstance(envelope.type, str) and envelope.type in EVENT_TAGS):
            code, message = "unknown_event_type", f"not a known qbus event: {text}"
        else:
            code, message = schema_rejection(envelope.type, text, where)
        metrics.REJECTIONS.labels(self.stage, code).inc()
        if not self.bus.subjects.is_submission(msg.subject):
            # An internal event we cannot read: a newer producer's tag or a bug. End the
            # message with a reason rather than crash or fail someone's job by guesswork.
            log.error(
                "stage %s: dropping unreadable %s (%s): %s", self.stage, msg.subject, code, text
            )
            return []
        readable = isinstance(envelope.job_id, str) and is_valid_job_id(envelope.job_id)
        if not readable or self._unknown_submit_subject(msg.subject):
            # No job to answer on (or a subject no job can start from): the sender finds
            # the answer under its message id (docs/protocol.md, "Answers").
            return [self._refusal(msg, event_id, job_id, code, message, where)]
        return [self._refusal(msg, event_id, job_id, code, message, where, refused=False)]

    def _unknown_submit_subject(self, subject: str) -> bool:
        """Under ``<prefix>.submit`` but neither it nor a tenant's ``submit.<tenant>``."""
        subjects = self.bus.subjects
        return subjects.is_submission(subject) and subjects.tenant_of_submit(subject) is None

    def _refusal(
        self,
        msg: Msg,
        cause: str,
        job_id: str,
        code: str,
        message: str,
        where: str | None = None,
        *,
        refused: bool = True,
    ) -> JobRejected:
        """The answer to a message on a submit subject that holds no job.

        It goes to ``<prefix>.refused.<key>`` (and the tenant's copy), keyed by the
        message (``refusal_key``), never to the result subject of ``job_id``: that job,
        if any, is another submission's. Its id is derived from the key, so a redelivery
        gets the same answer and two messages never share one. With ``refused`` False
        it is the rejection of the job ``job_id`` (an undecodable submission that names
        one), on that job's result subject.
        """
        key = refusal_key(msg)
        tenant = self.bus.subjects.tenant_of_submit(msg.subject) or ""
        job = job_id if is_valid_job_id(job_id) else key
        return JobRejected(
            event_id=(
                derived_event_id(key, "job.refused", job_id=job, tenant=tenant)
                if refused
                else derived_event_id(cause, "job.rejected", job_id=job, tenant=tenant)
            ),
            job_id=job,
            causation_id=cause,
            producer=self.producer,
            code=code,
            message=message,
            stage=self.stage,
            where=where,
            tenant=tenant,
            refusal=key if refused else None,
        )

    def _rejected(self, event: Event, code: str, message: str, where: str | None) -> JobRejected:
        return answer(
            event,
            JobRejected,
            self.producer,
            code=code,
            message=message,
            stage=self.stage,
            where=where,
            tenant=tenancy.tenant_of(event),
        )

    async def _too_large(self, msg: Msg, output: Event) -> Event | None:
        """End the job of ``msg`` with JobFailed(``result_too_large``), ``output`` being
        over the server's message size; the stored event, or None if it was not stored."""
        size, limit = len(encode(output)), self.bus.nc.max_payload
        text = (
            f"{self.stage}: the {_tag(output)} of job {output.job_id} is {size:,} bytes, "
            f"over the bus's message limit of {limit:,} bytes (max_payload); ask for fewer "
            "shots, points or outcomes"
        )
        log.warning("stage %s: %s", self.stage, text)
        event = tenancy.trusted_submission(decode_event(msg.data), msg.subject, self.bus.subjects)
        failure = self._failed(event, RESULT_TOO_LARGE, text)
        try:
            await self.bus.publish(failure)
        except APIError as exc:
            if not _is_first_only_conflict(exc):
                log.warning("stage %s: cannot store %s", self.stage, failure, exc_info=True)
                return None
            return await self._existing(failure)  # the job had already ended
        return failure

    def _failed(self, event: Event, code: str, message: str) -> JobFailed:
        return answer(
            event,
            JobFailed,
            self.producer,
            code=code,
            message=message,
            stage=self.stage,
            tenant=tenancy.tenant_of(event),
        )


def _is_first_only_conflict(exc: BaseException) -> bool:
    """The server refused a publish guarded with Nats-Expected-Last-Subject-Sequence: 0."""
    return isinstance(exc, APIError) and exc.err_code == WRONG_LAST_SEQUENCE


def _tag(event: Event) -> str:
    return event.__struct_config__.tag  # type: ignore[return-value]


def _trace_headers(msg: Msg) -> dict[str, str] | None:
    if not msg.headers:
        return None
    found = {k: msg.headers[k] for k in TRACE_HEADERS if k in msg.headers}
    return found or None


async def _ack(msg: Msg) -> None:
    await msg.ack()


async def _term(msg: Msg) -> None:
    await msg.term()


def _nak_after(delay: float) -> Callable[[Msg], Awaitable[None]]:
    async def nak(msg: Msg) -> None:
        await msg.nak(delay=delay)

    return nak
