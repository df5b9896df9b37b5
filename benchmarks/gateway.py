"""The HTTP gateway's cost and fan-out (issue 16).

Starts nats-server, every stage as its own process and the gateway as its own process
(``qbus gateway``, as ``qbus up --http`` starts it), then:

1. **Latency**: Bell jobs one at a time, alternating two ways in one run — ``POST
   /v1/jobs`` with the result read from an open ``GET /v1/results`` SSE stream, and the
   same job published with nats-py directly (``js.publish`` on ``qbus.submit``, the result
   read from a core subscription on ``qbus.result.<job>``). Prints both p50s, the p50
   added by the gateway (target ≤ 1 ms) and the median of the per-pair differences.
2. **Fan-out**: ``--subscribers`` concurrent ``/v1/results`` SSE streams (default 200)
   while ``--fanout-jobs`` jobs (default 1,000) are published; every stream must receive
   every job's final event. Prints delivered / missed / duplicated counts and the time.

    python benchmarks/gateway.py                     # full form
    python benchmarks/gateway.py --jobs 20 --subscribers 10 --fanout-jobs 30   # short
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats
from bus_overhead import _provision, make_job

from qbus.bus.server import NatsServer
from qbus.schemas.events import encode
from qbus.supervisor import Supervisor

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_ready(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while True:
            try:
                if (await client.get("/v1/templates")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway at {base} did not answer in {timeout:g} s")
            await asyncio.sleep(0.2)


class Finals:
    """Final events read from one ``/v1/results`` SSE stream, by job id."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def read(self, client: httpx.AsyncClient, opened: asyncio.Event) -> None:
        headers = {"Accept": "text/event-stream"}
        async with client.stream("GET", "/v1/results", headers=headers) as response:
            response.raise_for_status()
            opened.set()  # the gateway started its consumer before it answered
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    job_id = json.loads(line[5:])["event"]["job_id"]
                    self.seen[job_id] = self.seen.get(job_id, 0) + 1
                    self.arrived.setdefault(job_id, time.perf_counter())
                    self.changed.set()

    async def wait_for(self, job_id: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while job_id not in self.arrived:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(deadline - time.monotonic(), 0.001))
        return self.arrived[job_id]


async def latency(base: str, url: str, jobs: int, warm: int) -> tuple[list[float], list[float]]:
    """Per job (ms): through the gateway, and with nats-py directly, interleaved."""
    via_http: list[float] = []
    direct: list[float] = []
    nc = await nats.connect(url)
    js = nc.jetstream()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        finals = Finals()
        opened = asyncio.Event()
        reader = asyncio.create_task(finals.read(client, opened))
        await asyncio.wait_for(opened.wait(), 30)
        try:
            for n in range(warm + jobs):
                # The gateway: POST, then the final event on the open SSE stream.
                start = time.perf_counter()
                response = await client.post(
                    "/v1/jobs",
                    content=BELL,
                    params={"shots": 100},
                    headers={"Content-Type": "text/plain"},
                )
                response.raise_for_status()
                took_http = (await finals.wait_for(response.json()["job_id"]) - start) * 1e3
                # nats-py: subscribe to the result, publish the job, wait.
                job = make_job(100)
                got = asyncio.get_running_loop().create_future()

                async def on_result(msg, f=got) -> None:
                    if not f.done():
                        f.set_result(msg)

                sub = await nc.subscribe(f"qbus.result.{job.job_id}", cb=on_result)
                start = time.perf_counter()
                await js.publish("qbus.submit", encode(job), headers={"Nats-Msg-Id": job.event_id})
                await asyncio.wait_for(got, 60)
                took_direct = (time.perf_counter() - start) * 1e3
                await sub.unsubscribe()
                if n >= warm:
                    via_http.append(took_http)
                    direct.append(took_direct)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await nc.close()
    return via_http, direct


async def fan_out(base: str, url: str, subscribers: int, jobs: int, timeout: float) -> dict:
    """``subscribers`` SSE streams while ``jobs`` jobs run: what each received."""
    limits = httpx.Limits(max_connections=subscribers + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as client:
        streams = [Finals() for _ in range(subscribers)]
        opened = [asyncio.Event() for _ in streams]
        readers = [
            asyncio.create_task(s.read(client, o)) for s, o in zip(streams, opened, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 120)
        nc = await nats.connect(url)
        js = nc.jetstream()
        start = time.perf_counter()
        ids = set()
        for first in range(0, jobs, 100):
            batch = [make_job(100) for _ in range(min(100, jobs - first))]
            ids |= {job.job_id for job in batch}
            await asyncio.gather(
                *(
                    js.publish("qbus.submit", encode(j), headers={"Nats-Msg-Id": j.event_id})
                    for j in batch
                )
            )
        await nc.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(ids <= s.seen.keys() for s in streams):
                break
            await asyncio.sleep(0.1)
        took = time.perf_counter() - start
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    received = sum(len(ids & s.seen.keys()) for s in streams)
    return {
        "expected": subscribers * jobs,
        "delivered": received,
        "missed": subscribers * jobs - received,
        "duplicates": sum(n - 1 for s in streams for j, n in s.seen.items() if j in ids and n > 1),
        "seconds": took,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per way for the latency")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--fanout-jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the fan-out")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="qbus-gw-bench-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        asyncio.run(_provision(server.url))
        sup = Supervisor(
            server.url,
            Path(tmp) / "logs",
            extra_stages=[("gateway", ["gateway", "--port", str(port)])],
            extra_env={"QBUS_STATE_DIR": str(Path(tmp) / "state")},
        )
        sup.start()
        try:
            asyncio.run(wait_ready(base))
            via_http, direct = asyncio.run(latency(base, server.url, args.jobs, args.warmup))
            fan = asyncio.run(
                fan_out(base, server.url, args.subscribers, args.fanout_jobs, args.timeout)
            )
        finally:
            sup.stop()
    http_p50, direct_p50 = statistics.median(via_http), statistics.median(direct)
    paired = statistics.median(h - d for h, d in zip(via_http, direct, strict=True))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"gateway benchmark: commit {commit or '?'}, {time.strftime('%Y-%m-%d')}")
    print(f"load before: {load:.2f}  after: {os.getloadavg()[0]:.2f}")
    print(f"latency jobs: {len(via_http)} per way, interleaved, Bell 100 shots")
    print(f"gateway p50 ms: {http_p50:.2f}")
    print(f"nats-py p50 ms: {direct_p50:.2f}")
    print(f"added p50 ms: {http_p50 - direct_p50:.2f}")
    print(f"paired difference median ms: {paired:.2f}")
    print(f"ratio gateway / nats-py: {http_p50 / direct_p50:.3f}")
    print(f"fan-out: {args.subscribers} subscribers x {args.fanout_jobs} jobs")
    print(f"delivered: {fan['delivered']} of {fan['expected']}")
    print(f"missed: {fan['missed']}")
    print(f"duplicates: {fan['duplicates']}")
    print(f"fan-out seconds: {fan['seconds']:.1f}")
    return 0 if fan["missed"] == 0 and fan["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
