"""Subject names: the route is the subject (``qbus.exec.<engine>.<job>``).

Every name is built from a prefix (``qbus`` by default) so that tests and tenants can run
side by side on one server without seeing each other's events.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbus.schemas.enums import PRIORITIES
from qbus.schemas.events import (
    Cancel,
    CircuitIngested,
    CircuitRewritten,
    ControlRejected,
    DeadLetter,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
    Reroute,
    ResultAnchored,
    is_valid_job_id,
)


def refusal_key(msg_id: str, seq: int) -> str:
    """The key a refusal of a message is published under (``<prefix>.refused.<key>``).

    The message's ``Nats-Msg-Id`` when it is a subject token like a job id
    (``[A-Za-z0-9_-]{1,64}``) and does not start with ``seq-``; else ``seq-<seq>``, the
    message's stream sequence, which the sender's publish ack reports. A sender computes
    it from what it sent; ingest from what it received (docs/protocol.md, "Answers").
    """
    if is_valid_job_id(msg_id) and not msg_id.startswith("seq-"):
        return msg_id
    return f"seq-{seq}"


STAGE_NAMES = ("ingest", "rewrite", "route", "execute", "verify", "audit", "anchor", "control")
"""The stages, each a durable consumer on the stream (``qbus stage NAME``)."""


@dataclass(frozen=True)
class Subjects:
    """Subject names under one prefix."""

    prefix: str = "qbus"

    @property
    def all(self) -> str:
        """Every qbus subject: what the event-log stream holds."""
        return f"{self.prefix}.>"

    @property
    def submit(self) -> str:
        """Where producers publish JobSubmitted."""
        return f"{self.prefix}.submit"

    def submit_for(self, tenant: str = "*") -> str:
        """Where tenant ``tenant`` publishes JobSubmitted; its NATS user may publish only
        here, so ingest takes the job's tenant from this subject (docs/security.md)."""
        return f"{self.prefix}.submit.{tenant}"

    @property
    def submit_all(self) -> str:
        """Every subject under ``<prefix>.submit.``: what ingest consumes besides
        ``submit``, so a message on an unknown one (``qbus.submit.a.b``) is answered with
        a refusal instead of lying in the log unread."""
        return f"{self.prefix}.submit.>"

    def is_submission(self, subject: str) -> bool:
        """``<prefix>.submit`` or any subject under it, known tenant subject or not."""
        return subject == self.submit or subject.startswith(self.submit + ".")

    def refused(self, key: str = "*") -> str:
        """Where the refusal of a message that holds no job goes, keyed by the message's
        ``Nats-Msg-Id`` (else ``seq-<stream sequence>``): docs/protocol.md, "Answers"."""
        return f"{self.prefix}.refused.{key}"

    def tenant_refused(self, tenant: str = "*", key: str = "*") -> str:
        """A tenant's copy of a refusal of its message, readable by that tenant alone."""
        return f"{self.prefix}_tenant.{tenant}.refused.{key}"

    def tenant_of_submit(self, subject: str) -> str | None:
        """The tenant of a submit subject: "" for ``<prefix>.submit``, None for others."""
        if subject == self.submit:
            return ""
        head = self.submit + "."
        if subject.startswith(head) and "." not in subject[len(head) :]:
            return subject[len(head) :]
        return None

    def tenant_result(self, tenant: str = "*", job: str = "*") -> str:
        """A copy of a tenant's final event, readable by that tenant alone.

        Outside ``<prefix>.>`` on purpose: the copies live in their own stream, so the
        event log holds every event once, on its one subject.
        """
        return f"{self.prefix}_tenant.{tenant}.result.{job}"

    def tenant_all(self, tenant: str = "*") -> str:
        """Every subject of ``tenant``'s own (``*``: of all tenants')."""
        return f"{self.prefix}_tenant.{tenant}.>"

    def ingested(self, job: str = "*") -> str:
        return f"{self.prefix}.ingested.{job}"

    def job_kinds(self, job: str) -> str:
        """Every ``<prefix>.<kind>.<job>`` subject: ingested, rewritten, executed, result,
        anchored, control (and, by accident of naming, a tenant's or a refusal's subject
        whose name equals ``job``).

        What ``circuit.ingested`` is guarded on: a job id whose subjects already hold an
        event was used before (docs/protocol.md, "Answers").
        """
        return f"{self.prefix}.*.{job}"

    def rewritten(self, job: str = "*") -> str:
        return f"{self.prefix}.rewritten.{job}"

    def exec(
        self, engine: str = "*", job: str = "*", priority: str = "normal", lane: str = "light"
    ) -> str:
        """Where ExecutionRequested for ``engine`` goes: the route itself.

        A ``high`` or ``low`` priority job carries one more token before the job id
        (``<prefix>.exec.<engine>.high.<job>``), so executors fetch each priority from its
        own consumer, high first (docs/routing.md). ``exec(engine)`` matches the normal
        ones only: the extra token makes the subject one token longer. A ``heavy`` lane
        request has ``heavy`` in that place whatever its priority
        (``<prefix>.exec.<engine>.heavy.<job>``): the executors' heavy slots read it.
        """
        if lane == "heavy":
            return f"{self.prefix}.exec.{engine}.heavy.{job}"
        if priority in PRIORITIES and priority != "normal":
            return f"{self.prefix}.exec.{engine}.{priority}.{job}"
        return f"{self.prefix}.exec.{engine}.{job}"

    def exec_all(self) -> str:
        """Every execution request, of every engine and priority."""
        return f"{self.prefix}.exec.>"

    def executed(self, job: str = "*") -> str:
        return f"{self.prefix}.executed.{job}"

    def result(self, job: str = "*") -> str:
        """Where the one final event of a job is published; what clients watch."""
        return f"{self.prefix}.result.{job}"

    def anchored(self, job: str = "*") -> str:
        """Where ResultAnchored (a result's Merkle proof and chain transaction) goes."""
        return f"{self.prefix}.anchored.{job}"

    def control(self, job: str = "*") -> str:
        return f"{self.prefix}.control.{job}"

    def dlq(self, stage: str = "*", job: str = "*") -> str:
        """Where a stage's dead letter for ``job`` goes (docs/operations.md)."""
        return f"{self.prefix}.dlq.{stage}.{job}"

    def dlq_all(self) -> str:
        """Every dead letter."""
        return f"{self.prefix}.dlq.>"

    def of_job(self, job: str) -> list[str]:
        """Every subject that carries ``job`` as its last token."""
        return [
            f"{self.prefix}.*.{job}",
            f"{self.prefix}.exec.*.{job}",
            f"{self.prefix}.exec.*.*.{job}",
            f"{self.prefix}.dlq.*.{job}",
        ]

    def for_event(self, event: Event) -> str:
        """The subject an event is published on."""
        match event:
            case JobSubmitted():
                return self.submit_for(event.tenant) if event.tenant else self.submit
            case CircuitIngested():
                return self.ingested(event.job_id)
            case CircuitRewritten():
                return self.rewritten(event.job_id)
            case ExecutionRequested():
                # The request's own lane: every chunk of a heavy job goes to the heavy lane.
                return self.exec(
                    event.engine, event.job_id, event.options.priority, lane=event.lane
                )
            case ExecutionCompleted() | ExecutionFailed():
                return self.executed(event.job_id)
            case JobRejected(refusal=str(key)):
                return self.refused(key)
            case JobCompleted() | JobFailed() | JobRejected():
                return self.result(event.job_id)
            case ResultAnchored():
                return self.anchored(event.job_id)
            case Reroute() | Cancel() | ControlRejected():
                return self.control(event.job_id)
            case DeadLetter():
                return self.dlq(event.stage, event.job_id)
        raise TypeError(f"no subject for {type(event).__name__}")
