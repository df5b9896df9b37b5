"""A stage process that dies of SIGSEGV on a poisoned submission, to prove dead letters.

``python -m tests.crashing_stage URL ACK_WAIT MAX_DELIVER GRACE`` consumes the submit
subject as the durable ``crashing`` with a real ``StageRunner`` (and its advisory
watcher). A submission labelled ``crash`` kills the whole process, as a segfaulting
native parser would, together with every message of its batch; any other submission
ends its job with JobFailed(``handled``), so a handled job is told from a dead letter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from qbus.bus.config import BusConfig, RetriesConfig
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.errors import Fail
from qbus.schemas.events import Event, JobSubmitted

STAGE = "crashing"
HANDLED = "handled"


class Crashing:
    """Segfaults on a submission labelled ``crash``; fails every other job on purpose."""

    async def handle(self, event: Event) -> Sequence[Event]:
        if isinstance(event, JobSubmitted) and "crash" in event.labels:
            os.kill(os.getpid(), signal.SIGSEGV)
        raise Fail(f"{STAGE} handled {event.job_id}", code=HANDLED)


async def main(url: str, ack_wait: float, max_deliver: int, grace: float) -> None:
    bus = await Bus.connect(BusConfig(url=url, ack_wait=ack_wait, max_deliver=max_deliver))
    runner = StageRunner(
        bus,
        stage=STAGE,
        durable=STAGE,
        subjects=[bus.subjects.submit],
        handler=Crashing(),
        retries=RetriesConfig(dead_letter_grace=grace),
        consumer_poll=0,
    )
    try:
        await runner.run()
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
