"""Submit jobs and wait for their one final event."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nats.js.errors

from qbus.bus.connection import Bus
from qbus.bus.job_log import first_stored, stored_events
from qbus.bus.retry import is_transient, retrying
from qbus.bus.subjects import refusal_key
from qbus.errors import BusError
from qbus.observability import tracing
from qbus.schemas.events import (
    Event,
    JobSubmitted,
    new_event_id,
    new_job_id,
)

FORMAT_BY_SUFFIX = {
    ".qasm": "auto",
    ".json": "json",
    ".qasm3": "qasm3",
    ".qasm2": "qasm2",
    ".quil": "quil",
}


def job_from_file(path: str | Path, **options: object) -> JobSubmitted:
    """A JobSubmitted for the program in ``path`` (OpenQASM 2/3, JSON IR or Quil)."""
    path = Path(path)
    text = path.read_text()
    return JobSubmitted(
        event_id=new_event_id(),
        job_id=str(options.pop("job_id", None) or new_job_id()),
        producer="qbus.cli",
        source=text,
        format=FORMAT_BY_SUFFIX.get(path.suffix, "auto"),
        **options,  # type: ignore[arg-type]
    )


# How long a publish keeps trying while the stream that stores it has no leader (a
# clustered stream re-electing after its leader's node went down takes a few seconds).
SUBMIT_RETRY_SECONDS = 30.0


async def submit(
    bus: Bus,
    job: JobSubmitted,
    *,
    headers: dict[str, str] | None = None,
    retry_for: float = SUBMIT_RETRY_SECONDS,
) -> int:
    """Publish a job (with extra NATS headers such as ``traceparent``); returns its sequence.

    Without a ``traceparent`` in ``headers`` and with tracing on, the publish is a
    PRODUCER span (child of the current span) whose context the job carries.

    A publish that nothing answers while the stream exists (a cluster electing the
    stream's leader, a server restarting) is sent again, with backoff, for ``retry_for``
    seconds. That is safe: the job's event id is its ``Nats-Msg-Id``, so a copy the
    stream already stored is acked as a duplicate with the first one's sequence.

    Raises:
        BusError: No stream stores the submit subject on this server (a bare
            nats-server that no qbus deployment has provisioned), or its stream did not
            answer for ``retry_for`` seconds.
    """
    if (headers and "traceparent" in headers) or not tracing.enabled():
        return await _publish(bus, job, headers, retry_for)
    with tracing.produce(
        bus.subjects.submit,
        scope="qbus.producer",
        attributes={tracing.JOB_ID: job.job_id, tracing.MESSAGE_ID: job.event_id},
    ) as trace_headers:
        return await _publish(bus, job, {**(headers or {}), **trace_headers}, retry_for)


async def _publish(
    bus: Bus, job: JobSubmitted, headers: dict[str, str] | None, retry_for: float
) -> int:
    async def attempt() -> int:
        try:
            return await bus.publish(job, headers=headers)
        except nats.js.errors.NoStreamResponseError as exc:
            if not await _stream_exists(bus):
                raise BusError(
                    f"no stream stores {bus.subjects.submit!r} on NATS at {bus.config.url}: "
                    "qbus is not set up on that server; start it with 'qbus up' (or run its "
                    "stages, which provision the stream)"
                ) from exc
            raise  # the stream is there but has no leader yet: try again

    try:
        return await retrying(
            "publishing the job",
            attempt,
            retry_for=retry_for,
            transient=lambda exc: (
                isinstance(exc, nats.js.errors.NoStreamResponseError) or is_transient(exc)
            ),
        )
    except nats.js.errors.NoStreamResponseError as exc:
        raise BusError(
            f"the stream that stores {bus.subjects.submit!r} on NATS at {bus.config.url} did "
            f"not answer for {retry_for:g} s: its cluster has no leader for it (too few "
            "nodes up?); 'qbus doctor --bus' shows each stream's replicas"
        ) from exc


async def _stream_exists(bus: Bus) -> bool:
    """Whether a stream stores the submit subject. Asked of the JetStream meta leader;
    when that does not answer either (a cluster mid-election), the stream is assumed to
    be there, so the publish is retried rather than refused as "not set up"."""
    try:
        await bus.js.find_stream_name_by_subject(bus.subjects.submit)
    except nats.js.errors.NotFoundError:
        return False
    except nats.js.errors.ServiceUnavailableError as exc:
        # nats-py raises this for "no responders" (no JetStream on the server: err_code
        # None) and for JetStream's own 503s (10008, no meta leader yet: transient).
        return exc.err_code is not None
    except Exception as exc:
        if not is_transient(exc):
            raise
    return True


async def wait_final(bus: Bus, job_id: str, timeout: float = 60.0) -> Event:
    """Wait for the job's final event (JobCompleted/JobFailed/JobRejected).

    Raises:
        TimeoutError: Nothing final within ``timeout`` seconds.
    """
    try:
        return await first_stored(bus, bus.subjects.result(job_id), timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"no result for job {job_id} within {timeout} s") from exc


async def wait_answer(
    bus: Bus, job_id: str, event_id: str, sequence: int, timeout: float = 60.0
) -> Event:
    """Wait for the answer to a submission this sender published: its job's final event,
    or the refusal of its message (docs/protocol.md, "Answers").

    A submission that holds no job — one under a job id another submission already
    used (``duplicate_job_id``) — is answered on ``<prefix>.refused.<key>`` only; the
    job's result subject then holds the other submission's final event, which is not
    this one's answer. The job is this submission's when its ``circuit.ingested`` answers
    ``event_id`` (or, for a job ingest rejected, its rejection does). Forged events are
    skipped as by ``wait_final``.

    Args:
        bus: The connection it was published on.
        job_id: The submission's job id.
        event_id: Its event id, sent as its ``Nats-Msg-Id``.
        sequence: Its stream sequence (what ``submit`` returned).
        timeout: Seconds to wait.

    Raises:
        TimeoutError: No answer within ``timeout`` seconds.
    """
    subjects = bus.subjects
    refused = subjects.refused(refusal_key(event_id, sequence))
    ingested = subjects.ingested(job_id)
    watched = [subjects.result(job_id), refused, ingested]
    ours: bool | None = None  # unknown until the job's ingested event is read
    try:
        async with contextlib.aclosing(stored_events(bus, watched, timeout)) as events:
            while True:
                subject, event = await anext(events)
                if subject == refused:
                    return event
                if subject == ingested:
                    if ours is None:  # the job's first circuit.ingested says whose it is
                        ours = event.causation_id == event_id
                elif ours or (ours is None and event.causation_id == event_id):
                    return event
    except TimeoutError as exc:
        raise TimeoutError(f"no answer to job {job_id} within {timeout} s") from exc
