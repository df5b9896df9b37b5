"""The HTTP gateway's cost and fan-out (issue 16).

Starts nats-server, every stage as its own process and the gateway as its own process
(``qbus gateway``, as ``qbus up --http`` starts it), then:

1. **Latency**: Bell jobs one at a time, alternating two ways in one run — ``POST
   /v1/jobs`` with the result read from an open ``GET /v1/results`` SSE stream (both over
   bare keep-alive HTTP/1.1 connections, ``RawHTTP``, so the client library's own cost
   is not counted as the gateway's), and the
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
from collections.abc import AsyncIterator
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


class RawHTTP:
    """A bare HTTP/1.1 keep-alive connection: what the gateway adds is measured, not the
    client library (httpx costs about 1.5 ms a request on the 2-core machine, more than
    the gateway's own work; nats-py on the other side is a lean client too)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawHTTP:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
        """Send a request; returns the head (status line and headers)."""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        return await self.reader.readuntil(b"\r\n\r\n")

    async def post(self, path: str, body: bytes, **headers: str) -> dict:
        head = await self.request("POST", path, body, **headers)
        if not head.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(f"POST {path}: {head[:60]!r}")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        return json.loads(await self.reader.readexactly(length))

    async def sse_lines(self) -> AsyncIterator[bytes]:
        """The lines of a chunked SSE body (after ``request``)."""
        pending = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            pending += chunk[:-2]
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")

    def close(self) -> None:
        self.writer.close()


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
                    self._got(json.loads(line[5:])["event"]["job_id"])

    async def read_raw(self, port: int, opened: asyncio.Event) -> None:
        http = await RawHTTP.open(port)
        try:
            head = await http.request("GET", "/v1/results", Accept="text/event-stream")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"GET /v1/results: {head[:60]!r}")
            opened.set()
            async for line in http.sse_lines():
                if line.startswith(b"data:"):
                    self._got(json.loads(line[5:])["event"]["job_id"])
        finally:
            http.close()

    def _got(self, job_id: str) -> None:
        self.seen[job_id] = self.seen.get(job_id, 0) + 1
        self.arrived.setdefault(job_id, time.perf_counter())
        self.changed.set()

    async def wait_for(self, job_id: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while job_id not in self.arrived:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(deadline - time.monotonic(), 0.001))
        return self.arrived[job_id]


async def latency(port: int, url: str, jobs: int, warm: int) -> dict[str, list[float]]:
    """Per job (ms), interleaved: through the gateway (``http``: POST to result on SSE;
    ``post``: POST to its 202) and with nats-py directly (``direct``: publish to result;
    ``publish``: publish to its PubAck)."""
    times: dict[str, list[float]] = {"http": [], "direct": [], "post": [], "publish": []}
    nc = await nats.connect(url)
    js = nc.jetstream()
    http = await RawHTTP.open(port)
    finals = Finals()
    opened = asyncio.Event()
    reader = asyncio.create_task(finals.read_raw(port, opened))
    await asyncio.wait_for(opened.wait(), 30)
    try:
        for n in range(warm + jobs):
            # The gateway: POST, then the final event on the open SSE stream.
            start = time.perf_counter()
            answer = await http.post("/v1/jobs?shots=100", BELL.encode(), Content_Type="text/plain")
            took_post = (time.perf_counter() - start) * 1e3
            took_http = (await finals.wait_for(answer["job_id"]) - start) * 1e3
            # nats-py: subscribe to the result, publish the job, wait.
            job = make_job(100)
            got = asyncio.get_running_loop().create_future()

            async def on_result(msg, f=got) -> None:
                if not f.done():
                    f.set_result(msg)

            sub = await nc.subscribe(f"qbus.result.{job.job_id}", cb=on_result)
            start = time.perf_counter()
            await js.publish("qbus.submit", encode(job), headers={"Nats-Msg-Id": job.event_id})
            took_publish = (time.perf_counter() - start) * 1e3
            await asyncio.wait_for(got, 60)
            took_direct = (time.perf_counter() - start) * 1e3
            await sub.unsubscribe()
            if n >= warm:
                times["http"].append(took_http)
                times["direct"].append(took_direct)
                times["post"].append(took_post)
                times["publish"].append(took_publish)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        http.close()
        await nc.close()
    return times


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
            times = asyncio.run(latency(port, server.url, args.jobs, args.warmup))
            fan = asyncio.run(
                fan_out(base, server.url, args.subscribers, args.fanout_jobs, args.timeout)
            )
        finally:
            sup.stop()
    via_http, direct = times["http"], times["direct"]
    http_p50, direct_p50 = statistics.median(via_http), statistics.median(direct)
    paired = statistics.median(h - d for h, d in zip(via_http, direct, strict=True))
    post_p50, publish_p50 = statistics.median(times["post"]), statistics.median(times["publish"])
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
    print(f"POST to 202 p50 ms: {post_p50:.2f}")
    print(f"publish to PubAck p50 ms: {publish_p50:.2f}")
    print(f"result leg added p50 ms: {(http_p50 - post_p50) - (direct_p50 - publish_p50):.2f}")
    print(f"fan-out: {args.subscribers} subscribers x {args.fanout_jobs} jobs")
    print(f"delivered: {fan['delivered']} of {fan['expected']}")
    print(f"missed: {fan['missed']}")
    print(f"duplicates: {fan['duplicates']}")
    print(f"fan-out seconds: {fan['seconds']:.1f}")
    return 0 if fan["missed"] == 0 and fan["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
