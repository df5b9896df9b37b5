"""Routing benchmark: ``auto``'s picks against the best engine per circuit in hindsight.

    .venv/bin/python -m benchmarks.routing              # held-back corpus of 60 circuits
    .venv/bin/python -m benchmarks.routing --quick      # a few small circuits (smoke test)
    .venv/bin/python -m benchmarks.routing --calibrate  # refit qbus/router/cost_defaults.json
    .venv/bin/python -m benchmarks.routing --cache-latency  # cache hit: publish -> final

The corpus is random circuits (2-22 qubits, varied depth, shots, sample/statevector)
from a seed; calibration uses another seed, so the evaluation corpus is held back from
the fit. Every circuit runs on every capable engine directly (in-process engine calls,
best of ``--repeat``); the best engine per circuit in hindsight gives the lower bound,
and the cost model's argmin (what ``engine=auto`` picks on an idle bus) gives auto's
total, as run. Acceptance target: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.router.capability import capability_filter
from qbus.router.cost import (
    DEFAULTS_FILE,
    SHOT_BY_SHOT,
    CostModel,
    JobFeatures,
    features,
    fit,
)
from qbus.schemas.events import JobOptions
from qbus.schemas.ir import Circuit, Op

ENGINES = ("qiskit-aer", "qsim", "quest", "cirq", "reference")
ONE_QUBIT = ("h", "x", "sx", "rz", "ry", "t")
DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "qbus" / "router" / DEFAULTS_FILE


def random_circuit(rng: random.Random, qubits: int, layers: int, measure: bool) -> Circuit:
    """A layered random circuit: one-qubit gates on every qubit, then a ring of cx."""
    ops: list[Op] = []
    for _ in range(layers):
        for q in range(qubits):
            name = rng.choice(ONE_QUBIT)
            params = (rng.uniform(0, 6.28),) if name in ("rz", "ry") else ()
            ops.append(Op(name=name, qubits=(q,), params=params))
        for q in range(rng.randrange(2), qubits - 1, 2):
            ops.append(Op(name="cx", qubits=(q, q + 1)))
    clbits = 0
    if measure:
        clbits = qubits
        ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(qubits)]
    return Circuit(num_qubits=qubits, num_clbits=clbits, ops=tuple(ops))


def corpus(seed: int, count: int, max_qubits: int) -> list[tuple[Circuit, JobOptions]]:
    """``count`` mixed jobs: qubits 2..max_qubits, depth 1..30 layers, shots, methods."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        qubits = rng.randint(2, max_qubits)
        method = rng.choice(("sample", "sample", "statevector"))
        layers = rng.randint(1, 30 if qubits <= 16 else 8)
        shots = rng.choice((100, 1000, 10_000, 100_000))
        circuit = random_circuit(rng, qubits, layers, method == "sample")
        jobs.append((circuit, JobOptions(method=method, shots=shots, seed=rng.randrange(1 << 30))))
    return jobs


def time_run(engine: str, circuit: Circuit, options: JobOptions, repeat: int) -> float:
    """Best-of-``repeat`` run seconds of one engine call (as ExecutionCompleted reports)."""
    eng = get_engine(engine)
    request = RunRequest(
        circuit=circuit, method=options.method, shots=options.shots, seed=options.seed or 0
    )
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        eng.run(request)
        best = min(best, time.perf_counter() - started)
    return best


def measure(
    jobs: list[tuple[Circuit, JobOptions]],
    engines: tuple[str, ...],
    repeat: int,
    table_path: Path | None = None,
) -> list[dict[str, float]]:
    """Per job: engine -> seconds, on every capable engine.

    With ``table_path``: read the table from there when it exists (to refit or re-score
    without re-running), else write it there after measuring.
    """
    if table_path is not None and table_path.exists():
        return json.loads(table_path.read_text())
    table = []
    for i, (circuit, options) in enumerate(jobs):
        capable = capability_filter(list(engines), circuit, options, 32_768).capable
        row = {e: time_run(e, circuit, options, repeat) for e in capable}
        table.append(row)
        print(
            f"  {i + 1:3d}/{len(jobs)} {circuit.num_qubits:2d}q {len(circuit.ops):5d} ops "
            f"{options.method:11s} " + " ".join(f"{e}={t * 1e3:.2f}ms" for e, t in row.items()),
            file=sys.stderr,
        )
    if table_path is not None:
        table_path.write_text(json.dumps(table))
    return table


def _feats(circuit: Circuit, options: JobOptions) -> JobFeatures:
    return features(circuit, options.method, options.shots)


def calibrate(
    engines: tuple[str, ...], count: int, max_qubits: int, repeat: int, table: Path | None
) -> dict:
    """Fit the cost model on a training corpus (seed 1) and return the JSON document."""
    for e in engines:  # warm: first calls import and compile
        time_run(e, random_circuit(random.Random(0), 3, 2, True), JobOptions(), 2)
    jobs = corpus(1, count, max_qubits)
    table = measure(jobs, engines, repeat, table)
    coefficients: dict[str, dict[str, list[float]]] = {}
    for engine in engines:
        for method in ("sample", "statevector"):
            rows = [
                (_feats(c, o), row[engine])
                for (c, o), row in zip(jobs, table, strict=True)
                if engine in row and o.method == method
            ]
            if len(rows) >= 4:
                coefficients.setdefault(engine, {})[method] = fit(rows)
    everything = [
        (_feats(c, o), t) for (c, o), row in zip(jobs, table, strict=True) for t in row.values()
    ]
    coefficients["*"] = {"sample": fit(everything), "statevector": fit(everything)}
    return {
        "meta": {
            "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}",
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "corpus": f"seed 1, {count} circuits, 2-{max_qubits} qubits",
            "model": "log(seconds) = w . [1, qubits, log1p(ops), log1p(shots)]",
        },
        "coefficients": coefficients,
    }


def keep_shot_by_shot(doc: dict, path: Path) -> None:
    """Carry the ``shot_by_shot`` rows (fitted by ``benchmarks.dynamic_cost``) and their
    meta over from ``path`` into ``doc``: this corpus has no dynamic circuits to refit them."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for engine, rows in old.get("coefficients", {}).items():
        if SHOT_BY_SHOT in rows:
            doc["coefficients"].setdefault(engine, {})[SHOT_BY_SHOT] = rows[SHOT_BY_SHOT]
    if SHOT_BY_SHOT in old.get("meta", {}):
        doc["meta"][SHOT_BY_SHOT] = old["meta"][SHOT_BY_SHOT]


def evaluate(
    engines: tuple[str, ...],
    count: int,
    max_qubits: int,
    repeat: int,
    table_path: Path | None = None,
    model: CostModel | None = None,
) -> float:
    """Run the held-back corpus (seed 2); print both totals and the ratio; return it."""
    model = model or CostModel.load_defaults()
    if table_path is None or not table_path.exists():
        for e in engines:
            time_run(e, random_circuit(random.Random(0), 3, 2, True), JobOptions(), 2)
    jobs = corpus(2, count, max_qubits)
    table = measure(jobs, engines, repeat, table_path)
    losses = []
    best_total = auto_total = 0.0
    hits = 0
    for (circuit, options), row in zip(jobs, table, strict=True):
        if not row:
            continue
        best = min(row, key=row.__getitem__)
        pick = min(row, key=lambda e: (model.predict(e, _feats(circuit, options)), e))
        best_total += row[best]
        auto_total += row[pick]
        hits += pick == best
        losses.append((row[pick] - row[best], circuit, options, pick, best, row))
    ratio = auto_total / best_total if best_total else float("nan")
    print(f"corpus: {len(jobs)} circuits (seed 2, 2-{max_qubits} qubits), engines {engines}")
    print(f"calibration: {model.meta.get('machine', '?')} ({model.meta.get('date', '?')})")
    print(f"best engine per circuit in hindsight: {best_total:.4f} s")
    print(f"auto (cost model argmin), as run:     {auto_total:.4f} s")
    print(f"ratio auto / best: {ratio:.3f} (target <= 1.2); auto picked the best {hits} times")
    for loss, circuit, options, pick, best, row in sorted(losses, key=lambda x: -x[0])[:5]:
        if loss > 0:
            print(
                f"  largest misses: {circuit.num_qubits}q {len(circuit.ops)} ops "
                f"{options.method}: picked {pick} {row[pick] * 1e3:.1f} ms, best {best} "
                f"{row[best] * 1e3:.1f} ms",
                file=sys.stderr,
            )
    return ratio


async def cache_latency(samples: int) -> None:
    """Publish a job whose result is cached; time publish -> JobCompleted(cached)."""
    import tempfile

    from qbus.bus.config import BusConfig, Config
    from qbus.bus.connection import Bus
    from qbus.bus.server import NatsServer
    from qbus.consumers.pipeline import Pipeline
    from qbus.producers.submit import wait_final
    from qbus.schemas.events import JobCompleted, JobSubmitted, new_event_id, new_job_id

    bell = (
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
        "h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"
    )

    def job(cache: bool = True) -> JobSubmitted:
        return JobSubmitted(
            event_id=new_event_id(),
            job_id=new_job_id(),
            source=bell,
            shots=500,
            seed=7,
            cache=cache,
        )

    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats", port=-1) as server:
        config = Config(bus=BusConfig(url=server.url), state_dir=str(Path(tmp) / "state"))
        async with await Bus.connect(config.bus) as bus:
            await bus.provision()
            async with Pipeline(config):
                first = job()
                await bus.publish(first)
                await wait_final(bus, first.job_id, 60)
                await asyncio.sleep(0.5)  # the feedback consumer writes the cache entry
                runs: dict[bool, list[float]] = {True: [], False: []}
                # The peer: the same job with --no-cache, through every stage and the engine.
                for cached in [True, False] * samples:
                    j = job(cached)
                    sub = await bus.nc.subscribe(bus.subjects.result(j.job_id))
                    started = time.perf_counter()
                    await bus.publish(j)
                    msg = await sub.next_msg(timeout=10)
                    runs[cached].append(time.perf_counter() - started)
                    await sub.unsubscribe()
                    from qbus.schemas.events import decode

                    final = decode(msg.data)
                    assert isinstance(final, JobCompleted) and final.cached == cached, final
                for cached, label in ((True, "cache hit"), (False, "same job, --no-cache")):
                    times = sorted(runs[cached])
                    print(
                        f"{label + ', publish -> final:':38s} median "
                        f"{times[len(times) // 2] * 1e3:6.2f} ms, p90 "
                        f"{times[int(len(times) * 0.9)] * 1e3:6.2f} ms over {samples} jobs"
                    )
                hit, run = (sorted(runs[c])[samples // 2] for c in (True, False))
                print(f"median ratio hit / run: {hit / run:.2f} (target: hit < 10 ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few small circuits")
    parser.add_argument("--calibrate", action="store_true", help="refit cost_defaults.json")
    parser.add_argument("--cache-latency", action="store_true")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=DEFAULTS_PATH)
    parser.add_argument(
        "--table", type=Path, default=None, help="measurements: reuse when present, else save"
    )
    args = parser.parse_args(argv)
    engines = tuple(e for e in args.engines.split(",") if e)
    if args.cache_latency:
        asyncio.run(cache_latency(args.count or 50))
        return 0
    if args.calibrate:
        doc = calibrate(engines, args.count or 80, 22, args.repeat, args.table)
        keep_shot_by_shot(doc, args.out)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.quick:
        ratio = evaluate(engines[:2], args.count or 4, 6, 1)
    else:
        ratio = evaluate(engines, args.count or 60, 22, args.repeat, args.table)
    return 0 if ratio == ratio else 1  # nan: nothing ran


if __name__ == "__main__":
    raise SystemExit(main())
