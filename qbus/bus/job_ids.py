"""Who holds a job id: a job id is used once, by one submission (docs/protocol.md)."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from qbus.bus.connection import Bus
from qbus.bus.tenancy import tenant_of
from qbus.frontends.bounds import UNDECODABLE, decode_event


class JobIds:
    """Tells whether a job id is held by another submission than a given one.

    Asked only when a cheaper sign says the id may be in use: the server refused a job's
    first event (its ``circuit.ingested`` or its rejection at ingest) because a subject
    of the job holds an event already (``Bus.headers_for``).

    A job id is held once the log has its ``circuit.ingested`` or its final event (or,
    once those aged out, the job-state bucket a state). Its holder is the submission
    that event answers: same event id and same tenant is the same
    submission (a redelivery, answered again with the same ids); anything else is a
    second job under a used id, refused with ``duplicate_job_id``.

    Args:
        bus: Connected bus.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None

    async def held(self, job_id: str, event_id: str, tenant: str) -> bool:
        """True when ``job_id`` belongs to another submission than ``event_id`` of ``tenant``.

        The log first: a rejection stored a moment ago by the same batch has no state in
        the bucket yet, and must still hold the id against a later submission.
        """
        subjects = self.bus.subjects
        for subject in (subjects.ingested(job_id), subjects.result(job_id)):
            try:
                stored = await self.bus.js.get_last_msg(self.bus.config.stream, subject)
            except NotFoundError:
                continue
            trust = self.bus.trust
            if trust and trust.message_problem(subject, stored.data, stored.headers):
                continue  # forged (bus/signing.py): it holds nothing
            try:
                holder = decode_event(stored.data)
            except UNDECODABLE:
                return True
            return holder.causation_id != event_id or tenant_of(holder) != tenant
        # No event: the id is new, unless the log aged out before the bucket did.
        if self._kv is None:  # one lookup of the bucket, not one per call
            self._kv = await self.bus.js.key_value(self.bus.config.kv_jobs)
        try:
            await self._kv.get(job_id)
        except KeyNotFoundError:
            return False
        return True
