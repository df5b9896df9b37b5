"""Dead letters: messages a stage gave up on, kept with the reason, listed and replayed.

A message becomes a dead letter after ``[bus] max_deliver`` deliveries without an outcome
(docs/operations.md, "Retries and dead letters"), in one of two ways:

* the handler raised on the last delivery: ``StageRunner`` publishes the DeadLetter and
  the job's JobFailed(``dead_lettered``), then terms the message;
* no outcome came at all (the handler hung past ``ack_wait``, the stage process died on
  the message, or the outputs could not be stored): the server publishes a
  max-deliveries advisory, the ``<stream>_ADVISORIES`` stream keeps it, and an
  ``AdvisoryWatcher`` run by every copy of the stage turns it into the same two events,
  unless the job has ended or the log holds an event the message caused (never judged
  by the consumer's ack floor, which the server moves past such messages).

Both paths derive the events' ids from (consumer, stream sequence), so when both fire the
server's dedupe and the final-event guard keep one of each. The DeadLetter is on
``<prefix>.dlq.<stage>.<job>`` in the event log; the message itself stays in the log at
its sequence, where ``qbus dlq show`` reads it and ``qbus dlq replay`` takes it from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from qbus.bus import tenancy
from qbus.bus.job_log import has_final
from qbus.bus.jobstate import state_for
from qbus.bus.signing import HEADER as SIGNATURE
from qbus.bus.signing import Signer
from qbus.frontends.bounds import UNDECODABLE, decode_event, shallow
from qbus.observability import metrics
from qbus.schemas.events import (
    DeadLetter,
    Event,
    JobFailed,
    answer,
    derived_event_id,
    encode,
    is_valid_job_id,
    new_event_id,
    tag_of,
)

if TYPE_CHECKING:
    from qbus.bus.connection import Bus

log = logging.getLogger("qbus.deadletter")

DEAD_LETTERED = "dead_lettered"
"""The JobFailed code of a job whose message was dead-lettered."""

REPLAY_HEADER = "Qbus-Replay-Of"
"""Header on a replayed message: the id of the dead letter it was replayed from."""

_WRONG_LAST_SEQUENCE = 10071  # the final-event guard refused a second final event


class _JobIdOnly(msgspec.Struct):
    job_id: str | None = None
    event_id: str | None = None


_lenient = msgspec.json.Decoder(_JobIdOnly)


class _CauseOnly(msgspec.Struct):
    causation_id: str | None = None


_caused = msgspec.json.Decoder(_CauseOnly)


def dead_letter_id(consumer: str, stream: str, seq: int) -> str:
    """The DeadLetter id of message ``seq`` of ``stream`` given up by ``consumer``."""
    # The stream sequence names the message alone: no job or tenant scope is needed.
    return derived_event_id(f"{stream}/{seq}/{consumer}", "dead.letter", job_id="")


def dead_letter_events(
    *,
    stage: str,
    consumer: str,
    stream: str,
    subject: str,
    seq: int,
    deliveries: int,
    reason: str,
    cause: str,
    data: bytes | None,
    producer: str,
) -> list[Event]:
    """The DeadLetter for a message, then the JobFailed that ends its job.

    The JobFailed is left out when the message's job cannot be told (junk that does not
    even name a usable job id): no client can be waiting on it.
    """
    event: Event | None = None
    job_id = event_id = None
    if data is not None:
        try:
            event = decode_event(data)
            job_id, event_id = event.job_id, event.event_id
        except UNDECODABLE:
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                partial = _lenient.decode(shallow(data))
                job_id, event_id = partial.job_id, partial.event_id
    known_job = isinstance(job_id, str) and is_valid_job_id(job_id)
    letter = DeadLetter(
        event_id=dead_letter_id(consumer, stream, seq),
        job_id=job_id if known_job else f"invalid-{seq}",  # type: ignore[arg-type]
        causation_id=event_id if isinstance(event_id, str) and event_id else f"seq-{seq}",
        producer=producer,
        stage=stage,
        consumer=consumer,
        stream=stream,
        subject=subject,
        stream_seq=seq,
        deliveries=deliveries,
        reason=reason,
        cause=cause,
        original_type=tag_of(type(event)) if event is not None else "",
    )
    if not known_job:
        return [letter]
    failed = answer(
        letter,
        JobFailed,
        producer,
        code=DEAD_LETTERED,
        message=f"{stage} gave up on {event_id or subject} after {deliveries} deliveries: "
        f"{reason} (dead letter {letter.event_id})",
        stage=stage,
        tenant=tenancy.tenant_of(event) if event is not None else "",
    )
    return [letter, failed]


class LastErrors:
    """The last error text per stream sequence, for a dead letter's ``reason``.

    A stage that naks a message after an error remembers why; if the server then gives
    up on it (an advisory), the watcher in the same process can say why. Bounded.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._errors: OrderedDict[tuple[str, int], str] = OrderedDict()

    def note(self, consumer: str, seq: int, error: str) -> None:
        self._errors[(consumer, seq)] = error
        self._errors.move_to_end((consumer, seq))
        while len(self._errors) > self.size:
            self._errors.popitem(last=False)

    def get(self, consumer: str, seq: int) -> str | None:
        return self._errors.get((consumer, seq))


async def publish_dead_letter(bus: Bus, events: list[Event], stage: str) -> None:
    """Store a dead letter and its JobFailed (with the job's state), waiting for each.

    A JobFailed refused by the final-event guard is fine: the job had already ended.
    """
    for event in events:
        try:
            await bus.publish(event)
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                log.info("job %s already ended; its dead letter is kept", event.job_id)
                continue
            raise
        state = state_for(event, stage)
        writes = [await bus.put_state_async(event.job_id, state)] if state else []
        writes += await tenancy.tenant_writes(bus, event)
        await asyncio.gather(*writes)


class AdvisoryWatcher:
    """Turns the server's max-deliveries advisories for ``consumers`` into dead letters.

    Copies of a stage share the durable ``dlq-<consumer>`` on the advisory stream, so
    each advisory is handled once, and later when no copy was up when it came.

    Args:
        bus: Connected bus.
        stage: Stage name (the dead letters' ``stage``).
        consumers: The stage's durable consumers on the event log.
        last_errors: Why this process last failed each message, when it knows.
        grace: Seconds after the advisory before the message counts as lost: the server
            gives up when a delivery's ack wait runs out, but a holder whose "still
            working" signals were late (a starved machine) may yet finish it. A message
            whose outcome is in the log by then, or whose job has ended, is left alone.
        fetch_timeout: Seconds one pull request waits for an advisory.
    """

    def __init__(
        self,
        bus: Bus,
        stage: str,
        consumers: list[str],
        last_errors: LastErrors | None = None,
        grace: float = 60.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        self.bus = bus
        self.stage = stage
        self.consumers = consumers
        self.last_errors = last_errors or LastErrors()
        self.grace = grace
        self.fetch_timeout = fetch_timeout
        self.producer = f"qbus.{stage}"
        self.handled = 0

    @property
    def durable(self) -> str:
        return f"dlq-{self.consumers[0]}"

    async def run(self) -> None:
        """Handle advisories until cancelled."""
        cfg = self.bus.config
        subjects = [f"{cfg.max_deliveries_advisories[:-1]}{c}" for c in self.consumers]
        consumer = js_api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=max(cfg.ack_wait, 10.0),
        )
        if len(subjects) == 1:
            consumer.filter_subject = subjects[0]
        else:
            consumer.filter_subjects = subjects
        try:
            await self.bus.js.add_consumer(cfg.advisory_stream, consumer)
            sub = await self.bus.js.pull_subscribe_bind(self.durable, stream=cfg.advisory_stream)
        except Exception:
            # The stage still works; only hung messages stay without a dead letter.
            log.warning(
                "stage %s: cannot read %s (provision the bus with this qbus version): "
                "messages that time out will not be dead-lettered",
                self.stage,
                cfg.advisory_stream,
                exc_info=True,
            )
            return
        try:
            while True:
                try:
                    msgs = await sub.fetch(1, timeout=self.fetch_timeout)
                except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                    continue
                for msg in msgs:
                    age = time.time() - msg.metadata.timestamp.timestamp()
                    if age < self.grace:
                        # Come back when the grace is over (the stage keeps working).
                        await msg.nak(delay=self.grace - age)
                        continue
                    try:
                        await self.handle(json.loads(msg.data))
                    except Exception:
                        log.exception("stage %s: cannot dead-letter %s", self.stage, msg.data)
                        await msg.nak(delay=1.0)
                    else:
                        await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _settled(self, data: bytes | None) -> bool:
        """Whether the message got its outcome after the server gave up on it: its job
        has ended, or the log holds an event it caused (what the stage made of it).

        Never the consumer's ack floor: the server moves the floor past a message that
        ran out of deliveries as soon as a later one is acked, so a message that killed
        its stage (and its batch-mates, which died with it) would look acked.
        """
        if data is None:
            return False
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
            # Only top-level fields are read: of a payload nested too deep, only those.
            partial = _lenient.decode(shallow(data))
            if isinstance(partial.job_id, str) and is_valid_job_id(partial.job_id):
                # A forged final event (docs/security.md) does not count as the job's end.
                return await has_final(self.bus, partial.job_id) or (
                    isinstance(partial.event_id, str)
                    and await self._caused_any(partial.job_id, partial.event_id)
                )
        return False

    async def _caused_any(self, job_id: str, event_id: str) -> bool:
        """Whether any stored event of ``job_id`` names ``event_id`` as its cause."""
        sub = await self.bus.js.subscribe(
            self.bus.subjects.result(job_id),
            stream=self.bus.config.stream,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
            config=js_api.ConsumerConfig(filter_subjects=self.bus.subjects.of_job(job_id)),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.fetch_timeout)
                except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                    return False
                with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                    # Anyone can store junk nested 1,000 deep on a job's subject.
                    if _caused.decode(shallow(msg.data)).causation_id == event_id:
                        return True
                if msg.metadata.num_pending == 0:
                    return False
        finally:
            await sub.unsubscribe()

    async def handle(self, advisory: Mapping[str, object]) -> list[Event]:
        """Publish the dead letter (and JobFailed) for one max-deliveries advisory."""
        stream = str(advisory["stream"])
        consumer = str(advisory["consumer"])
        seq = int(advisory["stream_seq"])  # type: ignore[call-overload]
        deliveries = int(advisory.get("deliveries", 0))  # type: ignore[call-overload]
        subject, data = "", None
        try:
            stored = await self.bus.js.get_msg(stream, seq)
            subject, data = stored.subject or "", stored.data
        except NotFoundError:
            pass  # purged or aged out of the log: the letter says so
        if await self._settled(data):
            log.info("stage %s: %s #%d was settled after all", self.stage, stream, seq)
            return []
        reason = self.last_errors.get(consumer, seq) or (
            f"no outcome within ack_wait ({self.bus.config.ack_wait:g} s) on any of "
            f"{deliveries} deliveries: the handler hung or the stage process died"
        )
        if data is None:
            reason += "; the message is no longer in the log"
        events = dead_letter_events(
            stage=self.stage,
            consumer=consumer,
            stream=stream,
            subject=subject,
            seq=seq,
            deliveries=deliveries,
            reason=reason,
            cause="max_deliveries",
            data=data,
            producer=self.producer,
        )
        log.error("stage %s: dead-lettering %s #%d: %s", self.stage, stream, seq, reason)
        await publish_dead_letter(self.bus, events, self.stage)
        metrics.DEAD_LETTERS.labels(self.stage, "max_deliveries").inc()
        self.handled += 1
        return events


async def stop_watcher(task: asyncio.Task | None) -> None:
    """Cancel a watcher task and wait for it to let go of its subscription."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- reading and replaying (``qbus dlq``) ------------------------------------------------


async def dead_letters(bus: Bus, timeout: float = 2.0) -> list[tuple[int, DeadLetter]]:
    """Every dead letter in the log with its stream sequence, oldest first."""
    subject = bus.subjects.dlq_all()
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    if not info.state.subjects:
        return []
    sub = await bus.js.subscribe(
        subject,
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    found: list[tuple[int, DeadLetter]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                break
            with contextlib.suppress(*UNDECODABLE):
                event = decode_event(msg.data)
                if isinstance(event, DeadLetter):
                    found.append((msg.metadata.sequence.stream, event))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


class DeadLetterNotFound(LookupError):
    """No dead letter has that id (or the prefix matches several)."""


async def find_dead_letter(bus: Bus, ident: str) -> DeadLetter:
    """The dead letter whose id is ``ident`` or starts with it.

    Raises:
        DeadLetterNotFound: None matches, or more than one does.
    """
    matches = [dl for _, dl in await dead_letters(bus) if dl.event_id.startswith(ident)]
    exact = [dl for dl in matches if dl.event_id == ident]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeadLetterNotFound(f"no dead letter with id {ident!r} (see `qbus dlq`)")
    raise DeadLetterNotFound(f"{len(matches)} dead letters start with {ident!r}: give more")


async def original_message(bus: Bus, letter: DeadLetter) -> js_api.RawStreamMsg:
    """The dead-lettered message as the log holds it.

    Raises:
        DeadLetterNotFound: The log no longer holds it (purged, aged out).
    """
    try:
        return await bus.js.get_msg(letter.stream, letter.stream_seq)
    except NotFoundError as exc:
        raise DeadLetterNotFound(
            f"message {letter.stream_seq} of {letter.stream} is no longer in the log"
        ) from exc


async def replay(
    bus: Bus, letter: DeadLetter, signer_for: Callable[[Event], Signer | None] | None = None
) -> tuple[str, int]:
    """Publish the dead-lettered message again, on its subject, for another try.

    A message that decodes as an event goes out as that event under a fresh event id
    (so the server's dedupe lets it through and the audit sees an event whose
    ``Nats-Msg-Id`` is its id); its cause and content are unchanged. Junk goes out
    byte for byte under a fresh message id. Either way ``Qbus-Replay-Of`` names the
    dead letter.

    A new event id voids the original's stage signature, and with the stages' public
    keys the stages ignore an unsigned step or result (qbus/bus/signing.py):
    ``signer_for`` gives the key of the stage that wrote the event (None: unsigned).

    Returns:
        The new message id and its stream sequence.

    Raises:
        DeadLetterNotFound: The message is no longer in the log.
        nats.js.errors.APIError: The server refused it (e.g. the job already has its
            one ingested or final event, which a replay cannot add a second of).
    """
    stored = await original_message(bus, letter)
    extra = {REPLAY_HEADER: letter.event_id}
    try:
        event = decode_event(stored.data)
    except UNDECODABLE:
        event = None
    if event is None:
        msg_id = new_event_id()
        ack = await bus.js.publish(
            letter.subject, stored.data, headers={"Nats-Msg-Id": msg_id, **extra}
        )
        return msg_id, ack.seq
    again = msgspec.structs.replace(event, event_id=new_event_id())
    payload = encode(again)
    headers = bus.headers_for(again, extra)
    signer = signer_for(again) if signer_for is not None else None
    if signer is not None:
        headers[SIGNATURE] = signer.header(letter.subject, again.event_id, payload)
    ack = await bus.js.publish(letter.subject, payload, headers=headers)
    return again.event_id, ack.seq
