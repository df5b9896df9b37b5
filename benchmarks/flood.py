"""Canary latency while one sender floods the submit subject with garbage (issue 17).

Starts a nats-server and every stage as its own process (as ``qbus up`` does), then
measures a valid Bell job's end-to-end latency (publish -> final event), one canary at a
time every ``--interval`` seconds: first with the bus idle, then while one sender
publishes ``--flood`` malformed submissions as fast as it can (invalid JSON, unknown
gates, deep nesting, wrong types, other event types: each one is answered with a
rejection). Prints p50/p99 of both and the ratio flood / idle (the issue's bound for
fair ingest: p99 ratio <= 5).

The canary publishes on ``qbus.submit``, the flood on its own sender's subject
``qbus.submit.flooder`` (a tenant's: with NATS auth the only one it may use). Ingest
serves senders in turn (qbus/bus/fair.py). ``--same-sender`` puts the flood on the
canary's subject too, where nothing can tell them apart: that run shows the queue
fairness removes.

    python benchmarks/flood.py --flood 10000
    python benchmarks/flood.py --flood 10000 --same-sender
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.producers.submit import wait_final
from qbus.schemas.events import JobCompleted
from qbus.supervisor import Supervisor

BELL = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
    "h q[0];\ncx q[0], q[1];\nmeasure q -> c;\n"
)

GARBAGE = [
    lambda i: b"\x00not json " + str(i).encode(),
    lambda i: json.dumps(
        {
            "type": "job.submitted",
            "event_id": f"g{i}",
            "job_id": f"g{i}",
            "source": "OPENQASM 2.0; frob q;",
        }
    ).encode(),
    lambda i: (
        f'{{"type": "job.submitted", "event_id": "d{i}", "job_id": "d{i}", '
        f'"x": {"[" * 1000}1{"]" * 1000}}}'
    ).encode(),
    lambda i: json.dumps({"type": "job.failed", "job_id": f"f{i}", "event_id": f"f{i}"}).encode(),
    lambda i: json.dumps(
        {
            "type": "job.submitted",
            "event_id": f"s{i}",
            "job_id": f"s{i}",
            "source": BELL,
            "shots": "many",
        }
    ).encode(),
]


async def canary_latency(bus: Bus, k: int) -> float:
    doc = {
        "type": "job.submitted",
        "event_id": f"c-e{k}",
        "job_id": f"c-{k}",
        "source": BELL,
        "shots": 100,
    }
    start = time.perf_counter()
    await bus.js.publish(
        bus.subjects.submit, json.dumps(doc).encode(), headers={"Nats-Msg-Id": f"c-m{k}"}
    )
    final = await wait_final(bus, f"c-{k}", 600)
    assert isinstance(final, JobCompleted), final
    return (time.perf_counter() - start) * 1000


async def measure(bus: Bus, count: int, interval: float, first: int) -> list[float]:
    out = []
    for k in range(first, first + count):
        out.append(await canary_latency(bus, k))
        await asyncio.sleep(interval)
    return out


async def flood(bus: Bus, n: int, subject: str) -> float:
    rng = random.Random(17)
    start = time.perf_counter()
    for i in range(n):
        payload = rng.choice(GARBAGE)(i)
        await bus.js.publish(subject, payload, headers={"Nats-Msg-Id": f"flood-{i}"})
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="qbus-flood-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        sup = Supervisor(server.url, Path(tmp) / "logs")
        try:
            async with await Bus.connect(BusConfig(url=server.url)) as bus:
                await bus.provision()
                await bus.ensure_executor("qiskit-aer")
                sup.start()
                await canary_latency(bus, -1)  # every stage up
                idle = await measure(bus, args.canaries, args.interval, 0)
                flooder = (
                    bus.subjects.submit if args.same_sender else bus.subjects.submit_for("flooder")
                )
                task = asyncio.create_task(flood(bus, args.flood, flooder))
                during: list[float] = []
                k = args.canaries
                while not task.done():
                    during.append(await canary_latency(bus, k))
                    k += 1
                    await asyncio.sleep(args.interval)
                published_in = await task
                during += await measure(bus, 3, args.interval, k)  # behind the flood's tail
        finally:
            sup.stop()
    load = os.getloadavg()[0]
    where = "the canary's subject" if args.same_sender else "its own subject"
    idle50, idle99 = pct(idle, 0.5), pct(idle, 0.99)
    flood50, flood99 = pct(during, 0.5), pct(during, 0.99)
    print(
        f"qbus flood: {args.flood} garbage submissions from one sender "
        f"({where}), "
        f"a canary every {args.interval} s (load average {load:.2f})"
    )
    print(f"flood published in {published_in:.1f} s")
    print(f"idle:  {len(idle)} canaries, p50 {idle50:.1f} ms, p99 {idle99:.1f} ms")
    print(
        f"flood: {len(during)} canaries, p50 {flood50:.1f} ms, p99 {flood99:.1f} ms, "
        f"max {max(during):.1f} ms"
    )
    print(
        f"ratio flood / idle: p50 {flood50 / idle50:.1f}, p99 {flood99 / idle99:.1f} "
        "(goal: p99 <= 5)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--canaries", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument(
        "--same-sender",
        action="store_true",
        help="flood on the canary's submit subject (no fairness possible between them)",
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
