"""NATS operations per job, per stage: what each Bell job costs the bus, in counts.

Runs every stage in this process (``Pipeline``: each stage keeps its own connection and
durable consumer, as in its own process), submits N Bell jobs at once from a client
connection, waits for every final event and for the audit to cover them, and prints the
messages each stage's connection sent per job, by kind (qbus/observability/nats_ops.py):
publishes (stored events), KV writes, reads (KV/stream gets: round trips), other
JetStream API requests, acks, pull requests.

Counts do not depend on the machine's speed, except the few that background timers
cause (metric polls every 5 s, deployed-engine and backlog refreshes every 1–2 s), which
spread over the run; tests/test_nats_budget.py holds them to the budget in
docs/architecture.md.

    python benchmarks/nats_ops.py --jobs 200          # the table
    python benchmarks/nats_ops.py --jobs 200 --json   # per-job counts as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bus_overhead import make_job

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.control_watch import CLOCK_MARGIN
from qbus.bus.server import NatsServer
from qbus.consumers.pipeline import Pipeline
from qbus.observability.nats_ops import OPERATION_KINDS, count_operations
from qbus.schemas.events import FINAL_EVENTS, decode

# The per-job kinds that are round trips or stored writes: what the budget is about.
BUDGETED = ("publish", "kv_put", "read", "api", "object", "ack")


async def run(url: str, jobs: int, shots: int, state_dir: str) -> dict[str, dict[str, float]]:
    config = Config(bus=BusConfig(url=url), state_dir=state_dir)
    async with Pipeline(config) as pipeline:
        client = await Bus.connect(config.bus, name="client")
        finals: set[str] = set()
        done = asyncio.Event()
        wanted: set[str] = set()

        async def on_result(msg) -> None:
            event = decode(msg.data)
            if isinstance(event, FINAL_EVENTS):
                finals.add(event.job_id)
                if wanted and wanted <= finals:
                    done.set()

        sub = await client.nc.subscribe(client.subjects.result(), cb=on_result)
        # Warm-up (first-use imports, consumers bound) outside the counted window.
        warm = [make_job(shots) for _ in range(10)]
        wanted.update(j.job_id for j in warm)
        await asyncio.gather(*[await client.publish_async(j) for j in warm])
        await asyncio.wait_for(done.wait(), 120)
        await _audit_caught_up(client, pipeline)
        # The control watches vouch for events made CLOCK_MARGIN after they started
        # (qbus/bus/control_watch.py): count a bus in its steady state, not its first second.
        await asyncio.sleep(CLOCK_MARGIN)

        batch = [make_job(shots) for _ in range(jobs)]
        done.clear()
        wanted.clear()
        wanted.update(j.job_id for j in batch)
        with count_operations() as counts:
            await asyncio.gather(*[await client.publish_async(j) for j in batch])
            await asyncio.wait_for(done.wait(), 300)
            await _audit_caught_up(client, pipeline)
            # Let route-feedback and the job-state writes of the last jobs settle.
            await _idle(pipeline)
        await sub.unsubscribe()
        await client.close()
        pipeline.check()
    return counts.per_job(jobs)


async def _audit_caught_up(bus: Bus, pipeline: Pipeline) -> None:
    last = (await bus.js.stream_info(bus.config.stream)).state.last_seq
    await asyncio.wait_for(pipeline.stages["audit"].flushed_to(last), 60)


async def _idle(pipeline: Pipeline, quiet: float = 0.3, limit: float = 30.0) -> None:
    """Wait until no stage has processed anything for ``quiet`` seconds."""

    def processed() -> int:
        return sum(getattr(s, "processed", 0) for s in pipeline.stages.values())

    loop = asyncio.get_running_loop()
    start, seen = loop.time(), -1
    while loop.time() - start < limit:
        now = processed()
        if now == seen:
            return
        seen = now
        await asyncio.sleep(quiet)


def table(per_job: dict[str, dict[str, float]]) -> str:
    kinds = [*BUDGETED, "pull", "core"]
    lines = [f"{'connection':<22}" + "".join(f"{k:>9}" for k in kinds)]
    for name, row in per_job.items():
        lines.append(f"{name:<22}" + "".join(f"{row[k]:>9.2f}" for k in kinds))
    total = {k: sum(row[k] for row in per_job.values()) for k in OPERATION_KINDS}
    lines.append(f"{'all':<22}" + "".join(f"{total[k]:>9.2f}" for k in kinds))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="per-job counts as JSON")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="qbus-ops-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        per_job = asyncio.run(run(server.url, args.jobs, args.shots, str(Path(tmp) / "state")))
    if args.json:
        print(json.dumps(per_job, indent=2))
    else:
        print(f"NATS operations per job, {args.jobs} Bell jobs of {args.shots} shots at once")
        print(table(per_job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
