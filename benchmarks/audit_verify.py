"""Audit cost: ``qbus audit verify`` over a log of N jobs vs reading that log once.

Starts a real nats-server, runs N seeded Bell-state jobs through every stage in one
process (``Pipeline``) and waits for the auditor to chain them, then times:

1. read: every message of the event log through one ordered consumer (the floor: the
   audit cannot read the log faster than this);
2. chain only: the hash chain checks (digests against the chain), without the per-event
   semantic checks;
3. verify: the whole ``verify_log`` (chain, envelopes, causes, circuit and result hashes).

Prints events/s for each and the ratios to the plain read.

    python benchmarks/audit_verify.py --jobs 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.audit import event_digest
from qbus.schemas.events import JobSubmitted, new_event_id, new_job_id
from qbus.verifier.log_audit import read_all, verify_log

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""


async def _read(bus: Bus) -> int:
    n = 0
    async for _ in read_all(bus, bus.config.stream, bus.subjects.all):
        n += 1
    return n


async def _chain_only(bus: Bus) -> int:
    # The digest work of the chain check alone: what verify did before the semantic checks.
    n = 0
    async for msg in read_all(bus, bus.config.stream, bus.subjects.all):
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        event_digest(msg.subject, msg_id, msg.data)
        n += 1
    return n


async def main(jobs: int, repeat: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as server:
        config = Config(bus=BusConfig(url=server.url))
        async with await Bus.connect(config.bus) as bus:
            await bus.provision()
            async with Pipeline(config) as pipeline:
                for i in range(jobs):
                    await bus.publish(
                        JobSubmitted(
                            event_id=new_event_id(),
                            job_id=new_job_id(),
                            source=BELL,
                            shots=1000,
                            seed=i,
                        )
                    )
                deadline = time.monotonic() + 600
                while True:
                    info = await bus.js.stream_info(
                        config.bus.stream, subjects_filter=bus.subjects.result()
                    )
                    if info.state.messages >= jobs or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                last = (await bus.js.stream_info(config.bus.stream)).state.last_seq
                await pipeline.stages["audit"].flushed_to(last, timeout=120)
            rows = []
            for name, fn in (("read", _read), ("chain only", _chain_only), ("verify", None)):
                best = float("inf")
                events = 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    if fn is None:
                        report = await verify_log(bus)
                        assert report.ok, report.problems[:3]
                        events = report.events
                    else:
                        events = await fn(bus)
                    best = min(best, time.perf_counter() - started)
                rows.append((name, events, best))
    base = rows[0][2]
    print(f"{jobs} jobs, {rows[0][1]} events, best of {repeat}")
    print(f"{'pass':<12} {'seconds':>8} {'events/s':>10} {'vs read':>8}")
    for name, events, seconds in rows:
        print(f"{name:<12} {seconds:>8.3f} {events / seconds:>10.0f} {seconds / base:>7.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.jobs, args.repeat)))
