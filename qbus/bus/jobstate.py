"""Each job's current state in a KV bucket, written by the stages as the job moves on."""

from __future__ import annotations

import time

import msgspec

from qbus.schemas.events import (
    CircuitIngested,
    Event,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
)


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """What the KV bucket holds under a job id.

    Attributes:
        status: ``ingested``, ``routed``, ``completed``, ``failed`` or ``rejected``.
        stage: The stage that wrote this state.
        engine: The engine the job is routed to, once routed.
        generation: Bumped by every reroute.
        event_id: The event this state was derived from.
        updated: Unix time of the update.
    """

    status: str
    stage: str
    engine: str | None = None
    generation: int = 0
    event_id: str = ""
    updated: float = 0.0


FINAL_STATUSES = frozenset({"completed", "failed", "rejected"})


def state_for(event: Event, stage: str) -> JobState | None:
    """The job state an outgoing event implies, or None when it changes nothing visible."""
    now = time.time()
    match event:
        case CircuitIngested():
            return JobState(status="ingested", stage=stage, event_id=event.event_id, updated=now)
        case ExecutionRequested() if stage != "control":
            # The control stage writes a reroute's state itself, compare-and-set
            # (qbus/consumers/control.py): a plain put here could undo a newer reroute.
            return JobState(
                status="routed",
                stage=stage,
                engine=event.engine,
                generation=event.generation,
                event_id=event.event_id,
                updated=now,
            )
        case JobCompleted():
            return JobState(
                status="completed",
                stage=stage,
                engine=event.engine,
                event_id=event.event_id,
                updated=now,
            )
        case JobFailed():
            return JobState(status="failed", stage=stage, event_id=event.event_id, updated=now)
        case JobRejected(refusal=str()):
            # A refusal answers a message, not a job: the job id it names may be another
            # sender's job, whose state it must not touch.
            return None
        case JobRejected():
            return JobState(status="rejected", stage=stage, event_id=event.event_id, updated=now)
    return None


_decoder = msgspec.json.Decoder(JobState)


def decode_state(data: bytes) -> JobState:
    """Decode a KV value."""
    return _decoder.decode(data)
