"""Bus overhead: N small jobs through every stage, against a bare pipeline and direct calls.

Starts a real nats-server, every qbus stage as its own process (as ``qbus up`` does) and
the bare nats-py pipeline of ``benchmarks/bare_pipeline.py`` (the floor: five stages of
the same shape with no qbus code and no quantum work) on the same server, then measures
the two in turns (bare, qbus, bare, qbus, … over ``--repeats``), each:

1. throughput: N Bell-state jobs published at once, timed until every final event is in;
2. latency: jobs one at a time, publish → final event.

Also the same parse + engine call per job made directly in this process, with no bus.
Prints every repeat, the medians, and the ratios qbus / bare (the figure the docs track:
absolute times on a shared 2-core machine move by 2x from run to run, ratios measured in
the same run much less).

    python benchmarks/bus_overhead.py --jobs 1000 --repeats 3
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

from bare_pipeline import BarePipeline
from bare_pipeline import measure as measure_bare

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.qasm import parse_qasm
from qbus.schemas.events import JobSubmitted, decode, default_seed, new_event_id, new_job_id
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
        engine.run(request)  # validates, then runs: what the executor's sandbox calls
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


def summary(res: dict[str, object], jobs: int) -> tuple[float, float, float, float]:
    """(jobs/s all at once, p50 and p99 all at once, p50 one at a time) in s."""
    loaded, single = res["loaded"], res["single"]
    return (
        jobs / res["elapsed"],
        statistics.median(loaded),
        percentile(loaded, 0.99),
        statistics.median(single),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument(
        "--sequential", type=int, default=200, help="jobs run one at a time for the latency figures"
    )
    parser.add_argument("--copies", type=int, default=1, help="processes per qbus stage")
    parser.add_argument("--repeats", type=int, default=3, help="bare/qbus turns")
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted bare/qbus turns of 200 jobs first"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    direct = direct_calls(max(args.sequential, 200), args.shots)
    direct_p50 = statistics.median(direct)
    direct_rate = 1 / statistics.mean(direct)

    bare_runs: list[dict[str, object]] = []
    qbus_runs: list[dict[str, object]] = []
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
            with BarePipeline(server.url, template=BusConfig().stream):
                # One uncounted turn each first: a fresh stream and fresh stage processes
                # were measured up to 40% slower in their first turn (the bare pipeline's
                # more than qbus's), which would flatter whichever went first.
                for _ in range(args.warmup):
                    asyncio.run(measure_bare(server.url, 200, 10))
                    asyncio.run(through_bus(server.url, 200, args.shots, 10, pids))
                for _ in range(args.repeats):
                    bare_runs.append(
                        asyncio.run(measure_bare(server.url, args.jobs, args.sequential))
                    )
                    qbus_runs.append(
                        asyncio.run(
                            through_bus(server.url, args.jobs, args.shots, args.sequential, pids)
                        )
                    )
        finally:
            sup.stop()

    print(
        f"qbus bus overhead — {args.jobs} Bell jobs, {args.shots} shots, "
        f"{args.copies} process(es) per qbus stage, {args.repeats} turns bare/qbus after "
        f"{args.warmup} uncounted, "
        f"everything on this machine (load average: {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after)"
    )
    header = f"{'':30}{'jobs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'1-at-a-time p50':>17}"
    print(header)
    print(
        f"{'direct (parse + Aer run)':30}{direct_rate:>9.0f}{direct_p50 * 1e3:>9.2f}"
        f"{percentile(direct, 0.99) * 1e3:>9.2f}{'':>17}"
    )
    rows = []
    for turn, (bare, ours) in enumerate(zip(bare_runs, qbus_runs, strict=True), 1):
        for name, res in ((f"bare pipeline, turn {turn}", bare), (f"qbus, turn {turn}", ours)):
            rate, p50, p99, single = summary(res, args.jobs)
            print(f"{name:30}{rate:>9.0f}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}{single * 1e3:>17.2f}")
        rows.append((summary(bare, args.jobs), summary(ours, args.jobs)))
    bare_rate = statistics.median(r[0][0] for r in rows)
    qbus_rate = statistics.median(r[1][0] for r in rows)
    bare_p50 = statistics.median(r[0][3] for r in rows)
    qbus_p50 = statistics.median(r[1][3] for r in rows)
    rate_ratios = [r[1][0] / r[0][0] for r in rows]
    p50_ratios = [r[1][3] / r[0][3] for r in rows]
    print(
        f"medians: bare {bare_rate:.0f} jobs/s, {bare_p50 * 1e3:.2f} ms; "
        f"qbus {qbus_rate:.0f} jobs/s, {qbus_p50 * 1e3:.2f} ms"
    )
    print(
        "throughput qbus / bare: "
        + ", ".join(f"{x:.2f}" for x in rate_ratios)
        + f" (median {statistics.median(rate_ratios):.2f}; goal >= 0.5)"
    )
    print(
        "one-at-a-time p50 qbus / bare: "
        + ", ".join(f"{x:.2f}" for x in p50_ratios)
        + f" (median {statistics.median(p50_ratios):.2f}; goal <= 2)"
    )
    print(
        f"added latency p50 (qbus - direct): {(qbus_p50 - direct_p50) * 1e3:.2f} ms; "
        f"throughput qbus / direct: {qbus_rate / direct_rate:.2f}"
    )
    cpu = {name: statistics.median(r["cpu"][name] for r in qbus_runs) for name in pids}
    print(
        "CPU per job in qbus's all-at-once runs (ms, median of turns): "
        + ", ".join(
            f"{name} {sec / args.jobs * 1e3:.2f}"
            for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1])
        )
    )
    failures = sum(r["failures"] for r in qbus_runs)
    print(f"jobs not completed: {failures}")
    return 1 if failures else 0


async def _provision(url: str) -> None:
    async with await Bus.connect(BusConfig(url=url)) as bus:
        await bus.provision()
        await bus.ensure_executor("qiskit-aer")


if __name__ == "__main__":
    sys.exit(main())
