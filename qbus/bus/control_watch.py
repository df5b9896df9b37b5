"""Which jobs have had a control request: the only ones whose work can go stale.

An executor skips a request whose job was cancelled or rerouted, and the verify stage
drops a result of an older generation; both used to read the job's state from the KV
bucket for every job, a round trip on every job's path. A job's state can only move
that way through a Reroute or a Cancel on ``qbus.control.<job>``, so a process that
watches those subjects knows which jobs to look up: every other job is plainly current.

The watch is an ordered consumer (the same mechanism as a KV watcher: it resumes from its
last sequence after a reconnect, so it misses nothing) that delivers only what is stored
after it starts. It vouches for a job only when the event in hand was made after the
watch started (with a margin for clocks that differ between machines); older events,
and jobs it has seen a control request for, are looked up as before. What it cannot
see — a job cancelled before the watch started whose request was routed after — costs
at most a wasted run: the verify stage's first-only guard on the result subject still
lets only one final event through (docs/architecture.md, "Operations per job").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from nats.js import api as js_api

from qbus.bus.connection import Bus

__all__ = ["ControlWatch"]

log = logging.getLogger("qbus.control_watch")

CLOCK_MARGIN = 0.5
"""Seconds an event must be younger than the watch before the watch vouches for it."""


class ControlWatch:
    """The jobs that have had a control request since this process started watching.

    Args:
        bus: Connected bus.
        capacity: Job ids kept (oldest forgotten first); a forgotten job is looked up
            again only if its events are older than the watch, so the bound is safe.
    """

    def __init__(self, bus: Bus, capacity: int = 100_000) -> None:
        self.bus = bus
        self.capacity = capacity
        self._jobs: OrderedDict[str, None] = OrderedDict()
        self._started_at: float | None = None
        self._sub = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe (once); later calls return at once."""
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is not None:
                return
            subjects = self.bus.subjects
            self._sub = await self.bus.js.subscribe(
                subjects.control(),
                stream=self.bus.config.stream,
                ordered_consumer=True,
                deliver_policy=js_api.DeliverPolicy.NEW,
                cb=self._seen,
            )
            self._started_at = time.time()
            log.debug("watching %s for control requests", subjects.control())

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _seen(self, msg) -> None:
        job_id = msg.subject.rsplit(".", 1)[-1]
        self._jobs[job_id] = None
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.capacity:
            self._jobs.popitem(last=False)

    def contested(self, job_id: str) -> bool:
        """Whether a control request for ``job_id`` has been seen."""
        return job_id in self._jobs

    async def vouches_for(self, job_id: str, made_at: float) -> bool:
        """True when ``job_id``'s event made at ``made_at`` cannot be stale by control.

        Starts the watch on first use (stages start it with their consumer); the events
        in flight then are older than it and are looked up as before.
        """
        await self.start()
        started = self._started_at
        return (
            started is not None and made_at >= started + CLOCK_MARGIN and job_id not in self._jobs
        )
