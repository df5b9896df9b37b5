"""Who holds a job id: a job id is used once, by one submission (docs/protocol.md)."""

from __future__ import annotations

import msgspec
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from qbus.bus.connection import Bus
from qbus.bus.tenancy import tenant_of
from qbus.schemas.events import decode


class JobIds:
    """Tells whether a job id is held by another submission than a given one.

    Asked only when a cheaper sign says the id may be in use: the server refused a job's
    first event (its ``circuit.ingested`` or its rejection at ingest) because a subject
    of the job holds an event already (``Bus.headers_for``).

    A job id is held once the job-state bucket has a state for it (written after the
    job's ``circuit.ingested``, or its ``job.rejected`` at ingest, is stored). Its holder
    is the submission that event answers: same event id and same tenant is the same
    submission (a redelivery, answered again with the same ids); anything else is a
    second job under a used id, refused with ``duplicate_job_id``.

    Args:
        bus: Connected bus.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None

    async def held(self, job_id: str, event_id: str, tenant: str) -> bool:
        """True when ``job_id`` belongs to another submission than ``event_id`` of ``tenant``."""
        if self._kv is None:  # one lookup of the bucket, not one per submission
            self._kv = await self.bus.js.key_value(self.bus.config.kv_jobs)
        try:
            await self._kv.get(job_id)
        except KeyNotFoundError:
            return False  # the common case: a new job id, one KV read
        subjects = self.bus.subjects
        for subject in (subjects.ingested(job_id), subjects.result(job_id)):
            try:
                stored = await self.bus.js.get_last_msg(self.bus.config.stream, subject)
            except NotFoundError:
                continue
            try:
                holder = decode(stored.data)
            except (msgspec.ValidationError, msgspec.DecodeError):
                return True
            return holder.causation_id != event_id or tenant_of(holder) != tenant
        # A state but no event: the log aged out before the bucket did. Still used.
        return True
