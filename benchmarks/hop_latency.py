"""Where one job's latency goes: each hop of Bell jobs run one at a time, from the log.

Starts a server and every stage as its own process (as ``qbus up`` does), runs jobs one
at a time, then reads each job's events back from the event log and, for every hop,
prints the median of:

- *hop*: from the previous event being stored to this one being stored;
- *to made*: from the previous event being stored to this event being made (its
  ``timestamp``): delivery to the stage, decoding, the handler;
- *to stored*: from this event being made to its being stored: encoding and publishing.

Stored times are the server's, made times the stage's (the same clock on one machine).

    python benchmarks/hop_latency.py --jobs 60
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bus_overhead import _provision, make_job
from nats.js import api as js_api

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.producers.submit import submit, wait_final
from qbus.schemas.events import decode
from qbus.supervisor import Supervisor


async def hops(url: str, jobs: int, warm: int = 10) -> dict[str, list[tuple[float, float, float]]]:
    """Per hop (named by the event it ends with): (hop, to made, to stored) in ms."""
    found: dict[str, list[tuple[float, float, float]]] = {}
    async with await Bus.connect(BusConfig(url=url)) as bus:
        for n in range(warm + jobs):
            job = make_job(100)
            submitted = time.time()
            await submit(bus, job)
            await wait_final(bus, job.job_id, 30)
            if n < warm:
                continue
            prev_stored = submitted
            async for _, subject, event in _stored(bus, job.job_id):
                name = subject.split(".")[1]
                stored = event[0]
                made = event[1].timestamp
                found.setdefault(name, []).append(
                    (
                        (stored - prev_stored) * 1e3,
                        (made - prev_stored) * 1e3,
                        (stored - made) * 1e3,
                    )
                )
                prev_stored = stored
    return found


async def _stored(bus: Bus, job_id: str):
    """(sequence, subject, (stored time, event)) of a job's events, in log order."""
    sub = await bus.js.subscribe(
        bus.subjects.result(job_id),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
        config=js_api.ConsumerConfig(filter_subjects=bus.subjects.of_job(job_id)),
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=2)
            meta = msg.metadata
            yield meta.sequence.stream, msg.subject, (meta.timestamp.timestamp(), decode(msg.data))
            if meta.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="qbus-hops-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        asyncio.run(_provision(server.url))
        sup = Supervisor(server.url, Path(tmp) / "logs")
        sup.start()
        try:
            found = asyncio.run(hops(server.url, args.jobs))
        finally:
            sup.stop()
    print(f"hop latency, {args.jobs} Bell jobs one at a time (medians, ms)")
    print(f"{'event':<12}{'hop':>8}{'to made':>10}{'to stored':>11}")
    for name, rows in found.items():
        hop, made, stored = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"{name:<12}{hop:>8.2f}{made:>10.2f}{stored:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
