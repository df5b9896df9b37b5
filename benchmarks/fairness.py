"""Light jobs while a heavy shot-by-shot job runs, and the heavy job on 1 and 2 executors.

Issue 21: "heavy jobs never hold up light ones". Starts a nats-server and every stage as
its own process (as ``qbus up`` does) with the default settings, and measures:

1. **Light latency**: Bell jobs submitted at a steady rate (``--rate`` a second), each
   timed from publish to its final event; first with the bus idle, then while one
   shot-by-shot job of about ``--seconds`` seconds runs (mid-circuit measurements and
   resets on 12 qubits: Aer must simulate every shot on its own). The router predicts
   its run time, sends it to the heavy lane and splits it into shot chunks
   (docs/long-jobs.md); the Bell jobs keep the light lane. Goal: p50 and p99 during
   / idle <= 1.5.
2. **Heavy wall time**: the same heavy job alone (publish -> final event), with one
   executor copy and then with two. Goal: two copies / one <= 0.6.

The baseline of the heavy job is its run on Aer called directly in this process
(``aer direct``): one call, every shot, one thread, no bus; it also sizes the job
(shots are chosen so that the direct run takes about ``--seconds``).

    python benchmarks/fairness.py                 # a ~60 s heavy job (about 6 minutes)
    python benchmarks/fairness.py --seconds 10    # a quick look

The stages run with the shipped settings unless ``--heavy-seconds`` / ``--chunk-seconds``
set ``[lanes] heavy_seconds`` / ``[chunks] shot_seconds`` (with ``min_shots`` 8; the test
suite's short form makes a 3 s job heavy and chunked that way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.qasm import parse_qasm
from qbus.producers.submit import wait_final
from qbus.schemas.events import ExecutionRequested, JobCompleted
from qbus.schemas.ir import shot_by_shot
from qbus.supervisor import Supervisor

ENGINE = "qiskit-aer"
BELL = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
    "h q[0];\ncx q[0], q[1];\nmeasure q -> c;\n"
)


def heavy_program(qubits: int = 12, layers: int = 30) -> str:
    """A program Aer must run shot by shot: every layer entangles, measures and resets
    half the qubits mid-circuit (as error-correction rounds do)."""
    lines = ['OPENQASM 2.0;\ninclude "qelib1.inc";', f"qreg q[{qubits}];", f"creg c[{qubits}];"]
    for layer in range(layers):
        lines += [f"h q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in range(qubits - 1)]
        lines += [f"rz({0.1 * (layer + 1):.3f}) q[{i}];" for i in range(qubits)]
        half = range(layer % 2, qubits, 2)
        lines += [f"measure q[{i}] -> c[{i}];" for i in half]
        lines += [f"reset q[{i}];" for i in half]
    lines += [f"measure q[{i}] -> c[{i}];" for i in range(qubits)]
    return "\n".join(lines) + "\n"


def size_heavy_job(seconds: float) -> tuple[str, int, float]:
    """The heavy program, the shots that make its direct Aer run ~``seconds``, and the
    measured direct-run time of those shots (the baseline)."""
    program = heavy_program()
    circuit, _ = parse_qasm(program)
    assert shot_by_shot(circuit)
    engine = get_engine(ENGINE)
    engine.run(RunRequest(circuit=circuit, shots=5, seed=1))  # warm: transpile cache
    probe = 40
    start = time.perf_counter()
    engine.run(RunRequest(circuit=circuit, shots=probe, seed=1))
    per_shot = (time.perf_counter() - start) / probe
    shots = max(probe, round(seconds / per_shot))
    start = time.perf_counter()
    engine.run(RunRequest(circuit=circuit, shots=shots, seed=7))
    return program, shots, time.perf_counter() - start


async def submit(bus: Bus, job_id: str, source: str, shots: int, seed: int | None = None) -> None:
    doc: dict[str, object] = {
        "type": "job.submitted",
        "event_id": f"e-{job_id}",
        "job_id": job_id,
        "source": source,
        "shots": shots,
        "engine": ENGINE,
    }
    if seed is not None:
        doc["seed"] = seed
    await bus.js.publish(
        bus.subjects.submit, json.dumps(doc).encode(), headers={"Nats-Msg-Id": f"m-{job_id}"}
    )


async def light_latency(bus: Bus, job_id: str) -> float:
    start = time.perf_counter()
    await submit(bus, job_id, BELL, 100)
    final = await wait_final(bus, job_id, 600)
    assert isinstance(final, JobCompleted), final
    return (time.perf_counter() - start) * 1000


async def steady(bus: Bus, tag: str, rate: float, until: asyncio.Future | float) -> list[float]:
    """Bell jobs at ``rate`` a second until ``until`` (a future, or seconds); latencies."""
    tasks: list[asyncio.Task[float]] = []
    start = time.perf_counter()
    k = 0
    while True:
        done = (
            until.done()
            if isinstance(until, asyncio.Future)
            else (time.perf_counter() - start >= until)
        )
        if done:
            break
        tasks.append(asyncio.create_task(light_latency(bus, f"{tag}-{k}")))
        k += 1
        await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
    return list(await asyncio.gather(*tasks))


async def heavy_job(bus: Bus, job_id: str, program: str, shots: int) -> tuple[float, JobCompleted]:
    start = time.perf_counter()
    await submit(bus, job_id, program, shots, seed=2026)
    final = await wait_final(bus, job_id, 3600)
    assert isinstance(final, JobCompleted), final
    return time.perf_counter() - start, final


async def how_routed(bus: Bus, job_id: str) -> str:
    """The lane, chunks and whole-job prediction the router gave ``job_id`` (from its
    requests: each shot chunk carries its own share of the prediction)."""
    sub = await bus.js.subscribe(bus.subjects.exec_all(), ordered_consumer=True)
    lanes: set[str] = set()
    shares: dict[int, float] = {}
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            if not msg.subject.endswith(f".{job_id}"):
                continue
            request = json.loads(msg.data)
            assert request["type"] == ExecutionRequested.__struct_config__.tag
            lanes.add(request.get("lane", "light"))
            if request.get("predicted_seconds") is not None:
                shares[request.get("chunk") or 0] = request["predicted_seconds"]
    finally:
        await sub.unsubscribe()
    shown = f"{sum(shares.values()):.1f} s" if shares else "none"
    return f"lane {'/'.join(sorted(lanes))}, {max(len(shares), 1)} chunk(s), predicted {shown}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def settings(tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    """The environment that gives the stages the lane and chunk settings asked for."""
    lines = []
    if args.heavy_seconds is not None:
        lines += ["[lanes]", f"heavy_seconds = {args.heavy_seconds}"]
    if args.chunk_seconds is not None:
        lines += ["[chunks]", f"shot_seconds = {args.chunk_seconds}", "min_shots = 8"]
    if not lines:
        return {}
    path = tmp / "qbus.toml"
    path.write_text("\n".join(lines) + "\n")
    return {"QBUS_CONFIG": str(path)}


async def run_bus(
    tmp: Path, copies: int, args: argparse.Namespace, program: str, shots: int
) -> dict[str, object]:
    out: dict[str, object] = {}
    with NatsServer(tmp / f"nats-{copies}") as server:
        extra = [(f"execute-{ENGINE}#2", ["stage", "execute", "--engine", ENGINE])] * (copies - 1)
        sup = Supervisor(
            server.url, tmp / f"logs-{copies}", extra_stages=extra, extra_env=settings(tmp, args)
        )
        try:
            async with await Bus.connect(BusConfig(url=server.url)) as bus:
                await bus.provision()
                await bus.ensure_executor(ENGINE)
                sup.start()
                await light_latency(bus, f"warm-{copies}")  # every stage up
                if copies == 1:
                    out["idle"] = await steady(bus, "idle", args.rate, args.idle_seconds)
                    heavy = asyncio.ensure_future(heavy_job(bus, "heavy-busy", program, shots))
                    out["during"] = await steady(bus, "busy", args.rate, heavy)
                    out["busy_wall"], _ = await heavy
                    out["route"] = await how_routed(bus, "heavy-busy")
                out["wall"], final = await heavy_job(bus, f"heavy-{copies}", program, shots)
                out["counts_total"] = sum(final.counts.values())
                out["verdict"] = final.verification.verdict
        finally:
            sup.stop()
    return out


async def main_async(args: argparse.Namespace) -> int:
    program, shots, direct = size_heavy_job(args.seconds)
    print(
        f"heavy job: 12 qubits, 30 rounds of mid-circuit measure+reset, {shots} shots; "
        f"aer direct (one call, this process): {direct:.1f} s"
    )
    with tempfile.TemporaryDirectory(prefix="qbus-fairness-") as tmp:
        one = await run_bus(Path(tmp), 1, args, program, shots)
        two = await run_bus(Path(tmp), 2, args, program, shots)
    load = os.getloadavg()[0]
    idle, during = one["idle"], one["during"]
    assert isinstance(idle, list) and isinstance(during, list)
    idle50, idle99 = pct(idle, 0.5), pct(idle, 0.99)
    busy50, busy99 = pct(during, 0.5), pct(during, 0.99)
    print(f"routing: {one['route']}")
    print(f"light: Bell jobs at {args.rate}/s (load average at the end {load:.2f})")
    print(f"  idle:        {len(idle)} jobs, p50 {idle50:.1f} ms, p99 {idle99:.1f} ms")
    print(
        f"  heavy busy:  {len(during)} jobs, p50 {busy50:.1f} ms, p99 {busy99:.1f} ms "
        f"(the heavy job took {one['busy_wall']:.1f} s meanwhile)"
    )
    print(
        f"  ratio busy / idle: p50 {busy50 / idle50:.2f}, p99 {busy99 / idle99:.2f} (goal: <= 1.5)"
    )
    w1, w2 = one["wall"], two["wall"]
    assert isinstance(w1, float) and isinstance(w2, float)
    print(
        f"heavy alone: 1 executor {w1:.1f} s ({w1 / direct:.2f}x aer direct), "
        f"2 executors {w2:.1f} s ({w2 / direct:.2f}x); 2 / 1 = {w2 / w1:.2f} (goal: <= 0.6)"
    )
    print(
        f"  counts {one['counts_total']} / {two['counts_total']} of {shots} shots, "
        f"verdicts {one['verdict']} / {two['verdict']}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="heavy job's size")
    parser.add_argument("--rate", type=float, default=10.0, help="Bell jobs a second")
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--heavy-seconds", type=float, help="[lanes] heavy_seconds")
    parser.add_argument("--chunk-seconds", type=float, help="[chunks] shot_seconds")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
