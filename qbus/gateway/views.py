"""Events, job states and final events as the JSON the gateway answers and streams."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
from fastapi.responses import JSONResponse

from qbus.bus.jobstate import JobState
from qbus.schemas.events import Event


class MsgspecJSON(JSONResponse):
    """A JSON response encoded by msgspec: events are msgspec Structs, and a result's
    counts can be large."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def iso_time(seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC time."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def event_type(event: Event) -> str:
    """An event's wire tag (``job.completed`` …)."""
    return str(event.__struct_config__.tag)


def event_item(
    sequence: int, subject: str, event: Event, forged: str | None = None
) -> dict[str, Any]:
    """One stored event: an element of ``GET /v1/jobs/{id}/events`` and the data of
    each SSE message."""
    item: dict[str, Any] = {
        "sequence": sequence,
        "subject": subject,
        "type": event_type(event),
        "time": iso_time(event.timestamp),
        "event": msgspec.to_builtins(event),
    }
    if forged:
        item["forged"] = forged
    return item


def sse_data(item: dict[str, Any]) -> str:
    """An event item as the ``data:`` of an SSE message (one line of JSON)."""
    return msgspec.json.encode(item).decode()


def state_item(job_id: str, state: JobState) -> dict[str, Any]:
    """A job's KV state as a row of ``GET /v1/jobs``."""
    return {
        "job_id": job_id,
        "state": state.status,
        "stage": state.stage,
        "engine": state.engine,
        "generation": state.generation,
        "updated": iso_time(state.updated),
    }
