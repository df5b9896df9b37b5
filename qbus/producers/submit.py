"""Submit jobs and wait for their one final event."""

from __future__ import annotations

from pathlib import Path

import nats.js.errors

from qbus.bus.connection import Bus
from qbus.bus.job_log import first_stored
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


async def submit(bus: Bus, job: JobSubmitted, *, headers: dict[str, str] | None = None) -> int:
    """Publish a job (with extra NATS headers such as ``traceparent``); returns its sequence.

    Without a ``traceparent`` in ``headers`` and with tracing on, the publish is a
    PRODUCER span (child of the current span) whose context the job carries.

    Raises:
        BusError: No stream stores the submit subject on this server (a bare
            nats-server that no qbus deployment has provisioned).
    """
    try:
        if (headers and "traceparent" in headers) or not tracing.enabled():
            return await bus.publish(job, headers=headers)
        with tracing.produce(
            bus.subjects.submit,
            scope="qbus.producer",
            attributes={tracing.JOB_ID: job.job_id, tracing.MESSAGE_ID: job.event_id},
        ) as trace_headers:
            return await bus.publish(job, headers={**(headers or {}), **trace_headers})
    except nats.js.errors.NoStreamResponseError as exc:
        raise BusError(
            f"no stream stores {bus.subjects.submit!r} on NATS at {bus.config.url}: qbus is not "
            "set up on that server; start it with 'qbus up' (or run its stages, which "
            "provision the stream)"
        ) from exc


async def wait_final(bus: Bus, job_id: str, timeout: float = 60.0) -> Event:
    """Wait for the job's final event (JobCompleted/JobFailed/JobRejected).

    Raises:
        TimeoutError: Nothing final within ``timeout`` seconds.
    """
    try:
        return await first_stored(bus, bus.subjects.result(job_id), timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"no result for job {job_id} within {timeout} s") from exc
