"""Bus overhead: N small jobs through every stage vs the same engine calls made directly.

Starts a real nats-server and every stage as its own process (as ``qbus up`` does), then:

1. throughput: publishes N Bell-state jobs at once and times until every final event is in;
2. latency: runs jobs one at a time and times publish → final event;
3. direct: the same parse + engine call per job, in this process, with no bus.

Prints jobs/s, p50/p99 latency, and the ratios to the direct calls.

    python benchmarks/bus_overhead.py --jobs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.ingest import default_seed
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.schemas.events import JobSubmitted, decode, new_event_id, new_job_id
from qbus.schemas.qasm import parse_qasm
from qbus.supervisor import Supervisor

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def direct_calls(n: int, shots: int) -> list[float]:
    """Seconds per job for parse + engine run, without the bus."""
    engine = get_engine("qiskit-aer")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        circuit, _ = parse_qasm(BELL)
        request = RunRequest(
            circuit=circuit, method="sample", shots=shots, seed=default_seed(new_job_id())
        )
        engine.validate(request)
        engine.run(request)
        times.append(time.perf_counter() - t)
    return times


def make_job(shots: int) -> JobSubmitted:
    return JobSubmitted(
        event_id=new_event_id(), job_id=new_job_id(), producer="bench", source=BELL, shots=shots
    )


async def through_bus(
    url: str, n: int, shots: int, sequential: int, pids: dict[str, int]
) -> dict[str, object]:
    bus = await Bus.connect(BusConfig(url=url))
    done: dict[str, float] = {}
    outcomes: dict[str, str] = {}
    all_done = asyncio.Event()
    expected: set[str] = set()

    async def on_result(msg) -> None:
        event = decode(msg.data)
        done[event.job_id] = time.perf_counter()
        outcomes[event.job_id] = event.__struct_config__.tag
        if expected and expected <= done.keys():
            all_done.set()

    sub = await bus.nc.subscribe(bus.subjects.result(), cb=on_result)
    # Warm-up: every stage process has imported its libraries and bound its consumer.
    warm = [make_job(shots) for _ in range(20)]
    expected.update(j.job_id for j in warm)
    for j in warm:
        await bus.publish(j)
    await asyncio.wait_for(all_done.wait(), 120)

    # 1. Throughput: everything at once.
    jobs = [make_job(shots) for _ in range(n)]
    all_done.clear()
    expected.clear()
    expected.update(j.job_id for j in jobs)
    sent: dict[str, float] = {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.perf_counter()
    futures = []
    for j in jobs:
        sent[j.job_id] = time.perf_counter()
        futures.append(await bus.publish_async(j))
    await asyncio.gather(*futures)
    await asyncio.wait_for(all_done.wait(), 600)
    elapsed = time.perf_counter() - start
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    loaded = [done[j.job_id] - sent[j.job_id] for j in jobs]
    failures = sum(1 for j in jobs if outcomes[j.job_id] != "job.completed")

    # 2. Latency: one job at a time, an idle bus.
    single: list[float] = []
    for _ in range(sequential):
        j = make_job(shots)
        all_done.clear()
        expected.clear()
        expected.add(j.job_id)
        t = time.perf_counter()
        await bus.publish_async(j)
        await asyncio.wait_for(all_done.wait(), 60)
        single.append(done[j.job_id] - t)
    await sub.unsubscribe()
    await bus.close()
    return {
        "elapsed": elapsed,
        "loaded": loaded,
        "single": single,
        "failures": failures,
        "cpu": cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument(
        "--sequential", type=int, default=200, help="jobs run one at a time for the latency figures"
    )
    parser.add_argument("--copies", type=int, default=1, help="processes per stage")
    args = parser.parse_args()

    direct = direct_calls(max(args.sequential, 200), args.shots)
    direct_p50 = statistics.median(direct)
    direct_rate = 1 / statistics.mean(direct)

    with (
        tempfile.TemporaryDirectory(prefix="qbus-bench-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        asyncio.run(_provision(server.url))
        sup = Supervisor(server.url, Path(tmp) / "logs", copies=args.copies)
        sup.start()
        pids = {p.name: p.proc.pid for p in sup.processes if p.proc}
        pids["nats-server"] = server.pid
        try:
            res = asyncio.run(through_bus(server.url, args.jobs, args.shots, args.sequential, pids))
        finally:
            sup.stop()

    rate = args.jobs / res["elapsed"]
    single = res["single"]
    p50, p99 = statistics.median(single), percentile(single, 0.99)
    loaded = res["loaded"]
    print(
        f"qbus bus overhead — {args.jobs} Bell jobs, {args.shots} shots, "
        f"{args.copies} process(es) per stage, stages + nats-server on this machine"
    )
    print(f"{'':28}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'direct (parse + Aer run)':28}{direct_rate:>10.0f}{direct_p50 * 1e3:>10.2f}"
        f"{percentile(direct, 0.99) * 1e3:>10.2f}"
    )
    print(
        f"{'bus, one job at a time':28}{1 / statistics.mean(single):>10.0f}{p50 * 1e3:>10.2f}"
        f"{p99 * 1e3:>10.2f}"
    )
    print(
        f"{'bus, all at once':28}{rate:>10.0f}{statistics.median(loaded) * 1e3:>10.2f}"
        f"{percentile(loaded, 0.99) * 1e3:>10.2f}"
    )
    print(
        f"added latency p50: {(p50 - direct_p50) * 1e3:.2f} ms "
        f"(bus p50 / direct p50 = {p50 / direct_p50:.1f}x)"
    )
    print(f"throughput ratio bus / direct: {rate / direct_rate:.2f}")
    print(
        "CPU per job in the all-at-once run (ms): "
        + ", ".join(
            f"{name} {sec / args.jobs * 1e3:.2f}"
            for name, sec in sorted(res["cpu"].items(), key=lambda kv: -kv[1])
        )
    )
    print(f"jobs not completed: {res['failures']}")
    return 1 if res["failures"] else 0


async def _provision(url: str) -> None:
    async with await Bus.connect(BusConfig(url=url)) as bus:
        await bus.provision()
        await bus.ensure_executor("qiskit-aer")


if __name__ == "__main__":
    sys.exit(main())
