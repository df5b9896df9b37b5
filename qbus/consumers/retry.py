"""Retries of transient engine failures: a failed run is asked for again, with backoff.

Called by the verify stage for every ExecutionFailed (``qbus.executed.<job>``). A
``retryable`` failure (a throttled cloud engine, a crashed sandbox worker, an
``EngineError(retryable=True)``) of attempt ``k`` becomes, after ``backoff(k + 1)``
seconds, a new ExecutionRequested for attempt ``k + 1`` on the same engine subject
(``qbus.exec.<engine>.<job>``) — the very request that failed, with a new id derived from
the failure's id and the failure as its cause, so the retries are in the event log and a
redelivered failure asks only once. After ``[retries] max_attempts`` runs in all the job
ends with JobFailed carrying the engine's code and a message naming the attempts.

The wait never blocks the stage: while it lasts the handler raises ``Retry(remaining)``
and the runner naks the ExecutionFailed with that delay; the server hands it back when
the time is up (docs/operations.md explains why not JetStream's scheduled messages).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from nats.js import api as js_api

from qbus.bus.config import RetriesConfig
from qbus.consumers.engine_failure import engine_failed
from qbus.errors import Retry
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.observability import metrics
from qbus.schemas.events import (
    Event,
    ExecutionFailed,
    ExecutionRequested,
    JobFailed,
    derived_event_id,
)

if TYPE_CHECKING:
    from qbus.bus.connection import Bus

RequestFinder = Callable[[ExecutionFailed], Awaitable[ExecutionRequested | None]]
"""Reads the ExecutionRequested a failure answers (its ``causation_id``) from the log."""

# A nak delay shorter than this is not worth a round trip through the server.
_MIN_WAIT = 0.05


class RetryPolicy:
    """Decides what a failed execution leads to.

    Args:
        config: ``[retries]``.
        find_request: Reads the failed request back from the log (``find_request``).
        job_ended: Whether a job already has its final event (``job_log.has_final``):
            a job cancelled or otherwise ended during the wait is not run again.
        clock: Seconds since the epoch (the failures' timestamps are on this clock).
    """

    def __init__(
        self,
        config: RetriesConfig,
        find_request: RequestFinder,
        job_ended: Callable[[str], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.find_request = find_request
        self.job_ended = job_ended
        self.clock = clock

    async def on_failure(self, failed: ExecutionFailed) -> list[Event] | None:
        """The events a failure leads to, or None when it is not retried at all.

        None (a non-retryable failure) leaves the job's end to the caller, as before
        retries existed.

        Raises:
            Retry: The backoff before the next attempt has not passed yet; the message
                is to come back after ``delay`` seconds.
        """
        if not failed.retryable:
            return None
        runs = failed.attempt + 1
        if runs >= self.config.max_attempts:
            return [self._give_up(failed, f"gave up after {runs} attempts")]
        wait = self.config.backoff(runs)
        # The failure's own timestamp starts the wait: a redelivered or late-read failure
        # does not wait twice. Capped, so a producer clock ahead of ours cannot stretch it.
        remaining = min(wait, failed.timestamp + wait - self.clock())
        if remaining > _MIN_WAIT:
            raise Retry(
                f"attempt {runs + 1} of job {failed.job_id} waits {remaining:.2f} s",
                delay=remaining,
            )
        if self.job_ended is not None and await self.job_ended(failed.job_id):
            return []
        request = await self.find_request(failed)
        if request is None:
            return [
                self._give_up(
                    failed,
                    f"cannot retry after {runs} attempts: the request it answers "
                    f"({failed.causation_id}) is not in the log",
                )
            ]
        metrics.EXECUTION_RETRIES.labels(failed.engine).inc()
        return [
            msgspec.structs.replace(
                request,
                event_id=derived_event_id(
                    failed.event_id, "execution.requested", job_id=failed.job_id
                ),
                causation_id=failed.event_id,
                producer="qbus.verify",
                timestamp=self.clock(),
                attempt=runs,
            )
        ]

    def _give_up(self, failed: ExecutionFailed, why: str) -> JobFailed:
        return engine_failed(failed, f"{why}; last error: {failed.message}")


async def find_request(
    bus: Bus, failed: ExecutionFailed, timeout: float = 5.0
) -> ExecutionRequested | None:
    """The ExecutionRequested ``failed`` answers, read from the event log.

    It is on ``failed``'s engine subject of the job (any priority); a job split into
    chunks has several there, so the one whose id is ``failed.causation_id`` is picked.
    With the stages' public keys (``bus.trust``) only one that counts: a forged request
    under the same (derivable) event id is not retried under verify's signature.
    """
    s = bus.subjects
    # The job's normal subject, and the ones with a priority token before the job id.
    subjects = [
        s.exec(failed.engine, failed.job_id),
        f"{s.prefix}.exec.{failed.engine}.*.{failed.job_id}",
    ]
    sub = await bus.js.subscribe(
        subjects[0],
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=subjects),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
                return None
            trust = bus.trust
            event = None
            if not (trust and trust.message_problem(msg.subject, msg.data, msg.headers)):
                with contextlib.suppress(*UNDECODABLE):  # junk: skipped
                    event = decode_event(msg.data)
            if isinstance(event, ExecutionRequested) and event.event_id == failed.causation_id:
                return event
            if msg.metadata.num_pending == 0:
                return None
    finally:
        await sub.unsubscribe()
