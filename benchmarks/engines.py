"""Engines head to head: random state-vector circuits, a parameter sweep, and the sweep on the bus.

1. State vectors: per layer an ``ry`` and an ``rz`` on every qubit then a CNOT ladder,
   20 layers, at each width of ``--qubits``, method ``statevector``, through each
   engine's ``run``. A warm-up run comes first (for JAX it includes the jit compile,
   reported as ``first``), then the best and median of ``--repeats`` runs, taken in
   turns across the engines (a slow spell of the machine hits them all alike).
2. Sweep: a 12-qubit circuit with 48 named angles at 256 random points, method
   ``sweep`` with one observable (the transverse-field Ising energy
   ``sum Z_i Z_i+1 + 0.5 sum X_i``, exact expectation values), through each engine's
   ``run``: the jax engine's batched kernel, Aer's parameter binds in one call, a loop
   of runs on the others.
3. Bus sweep: the same sweep job submitted through a real nats-server with every stage
   in-process (ingest, rewrite, route, execute, verify), jax against qiskit-aer, timed
   from publish to the job's final event (verification of 64 points included).

Prints a table of seconds and ratios to qiskit-aer (``ratio`` < 1: faster than Aer).
An engine whose warm-up run of a case takes longer than ``--budget`` seconds gets no
repeats there (its ``first`` is its time) and skips the larger widths.

    python benchmarks/engines.py                # the full table: 12 16 20 22 24 qubits
    python benchmarks/engines.py --quick        # CI smoke test: aer and jax only, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from qbus.engines.base import Engine, RunRequest, loop_sweep
from qbus.errors import QbusError
from qbus.schemas.ir import Circuit, Op
from qbus.schemas.pauli import Observable

ENGINES: list[tuple[str, str]] = [
    ("qiskit-aer", "qbus.engines.aer:AerEngine"),
    ("jax", "qbus.engines.jax_engine:JaxEngine"),
    ("jax-c64", "qbus.engines.jax_engine:JaxEngine:complex64"),
]
"""Engines benchmarked first, as (name, ``module:Class``[``:arg``]); the optional third
part is passed to the constructor (``jax-c64``: the jax engine in complex64)."""

OTHERS = ("cirq", "qsim", "braket", "pennylane", "qutip", "quest")
"""Registry engines also benchmarked by default (``--engines`` replaces this list)."""

BASELINE = "qiskit-aer"
DEPTH = 20
SWEEP_QUBITS = 12
SWEEP_PARAMS = 48


def layered_circuit(n: int, depth: int, rng: np.random.Generator) -> Circuit:
    """``depth`` layers of ry/rz on every qubit followed by a CNOT ladder."""
    ops: list[Op] = []
    for _ in range(depth):
        for q in range(n):
            ops.append(Op(name="ry", qubits=(q,), params=(float(rng.uniform(0, 6.28)),)))
            ops.append(Op(name="rz", qubits=(q,), params=(float(rng.uniform(0, 6.28)),)))
        ops.extend(Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1))
    return Circuit(num_qubits=n, ops=tuple(ops))


def sweep_circuit(n: int = SWEEP_QUBITS, num_params: int = SWEEP_PARAMS) -> Circuit:
    """Layers of ry(t_i)/rz(t_j) on every qubit and CNOT ladders, ``num_params`` angles."""
    ops: list[Op] = []
    k = 0
    while k < num_params:
        for gate in ("ry", "rz"):
            for q in range(n):
                if k < num_params:
                    ops.append(Op(name=gate, qubits=(q,), params=(f"t{k}",)))
                    k += 1
        ops.extend(Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=tuple(f"t{i}" for i in range(k)))


def ising_energy(n: int = SWEEP_QUBITS) -> list[Observable]:
    """``sum Z_i Z_i+1 + 0.5 sum X_i``: the observable every sweep point reports."""
    terms = [{"coeff": 1.0, "pauli": f"Z{i} Z{i + 1}"} for i in range(n - 1)]
    terms += [{"coeff": 0.5, "pauli": f"X{i}"} for i in range(n)]
    return msgspec.convert([{"terms": terms}], list[Observable])


def sweep_points(count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """``count`` random points of the sweep circuit's angles."""
    names = sweep_circuit().parameters
    return [
        dict(zip(names, rng.uniform(0, 6.28, len(names)).tolist(), strict=True))
        for _ in range(count)
    ]


def load_engines(extra: list[str]) -> dict[str, Engine]:
    """Instantiate the default engines and the ``extra`` ones, skipping missing ones."""
    engines: dict[str, Engine] = {}
    for name, target in ENGINES:
        module, _, rest = target.partition(":")
        attr, _, arg = rest.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
            engines[name] = cls(arg) if arg else cls()
        except ImportError as exc:
            print(f"note: skipping {name}: {exc}")
    for name in extra:
        if name in engines:
            continue
        try:
            from qbus.engines.registry import get_engine

            engines[name] = get_engine(name)
        except (ImportError, QbusError) as exc:
            print(f"note: skipping {name}: {exc}")
    return engines


def timed_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, budget: float
) -> dict[str, tuple[float, float, float]]:
    """(first call, best, median of ``repeats`` further calls) in seconds, per contender.

    Each first call runs alone (compiles, warm-up); then every round runs each
    contender once, so a slow spell of a shared machine falls on all of them rather
    than on whichever ran at the time. A first call slower than ``budget`` is not
    repeated: its time stands for all three.
    """
    firsts: dict[str, float] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        firsts[name] = time.perf_counter() - start
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if firsts[name] > budget:
                continue
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {
        name: (first, min(runs[name]), statistics.median(runs[name]))
        if runs[name]
        else (first, first, first)
        for name, first in firsts.items()
    }


def _row(case: str, name: str, first: float, best: float, median: float, base: float | None) -> str:
    ratio = f"{best / base:8.2f}" if base else f"{'-':>8}"
    return f"{case:<22} {name:<12} {first:>9.3f} {best:>9.3f} {median:>9.3f} {ratio}"


def _print_rows(case: str, results: dict[str, tuple[float, float, float]]) -> None:
    base = results.get(BASELINE, (None, None, None))[1]
    for name, (first, best, median) in results.items():
        print(_row(case, name, first, best, median, base), flush=True)


def bench_statevectors(
    engines: dict[str, Engine], widths: list[int], repeats: int, budget: float
) -> None:
    """Rows ``statevector n=…``: one random layered circuit per width."""
    rng = np.random.default_rng(2024)
    too_slow: set[str] = set()
    for n in widths:
        request = RunRequest(circuit=layered_circuit(n, DEPTH, rng), method="statevector")
        fns = {}
        for name, engine in engines.items():
            limit = engine.capabilities.max_qubits.get("statevector", 0)
            if name in too_slow or n > limit:
                why = "over the time budget" if name in too_slow else f"max {limit} qubits"
                print(f"note: {name} skips {n} qubits ({why})")
                continue
            fns[name] = lambda e=engine, r=request: e.run(r)
        results = timed_interleaved(fns, repeats, budget)
        too_slow.update(name for name, (first, _, _) in results.items() if first > budget)
        _print_rows(f"statevector n={n}", results)


def bench_sweep(engines: dict[str, Engine], points: int, repeats: int, budget: float) -> None:
    """Row ``sweep 12q x…``: method ``sweep`` through each engine's ``run``."""
    request = RunRequest(
        circuit=sweep_circuit(),
        method="sweep",
        sweep=sweep_points(points, np.random.default_rng(7)),
        observables=ising_energy(),
    )
    fns: dict[str, Callable[[], object]] = {}
    for name, engine in engines.items():
        if "sweep" not in engine.capabilities.methods:
            print(f"note: {name} has no sweep method")
            continue
        fns[name] = lambda e=engine: e.run(request)
    if BASELINE in engines:
        # Aer without its batched path, point by point through ``run`` (the engine's
        # sweep before parameter binds): the baseline the first version of this table used.
        fns["aer-loop"] = lambda aer=engines[BASELINE]: loop_sweep(aer, request)
    results = timed_interleaved(fns, repeats, budget)
    values = {}
    for name, engine in engines.items():
        if name in fns:
            out = engine.run(request).sweep_results or []
            values[name] = np.array([p.expectations for p in out], dtype=float).reshape(-1)
    _print_rows(f"sweep {SWEEP_QUBITS}q x{points}", results)
    if BASELINE in values:
        for name, v in values.items():
            err = float(np.max(np.abs(v - values[BASELINE])))
            print(f"note: sweep {name}: largest |<H> - Aer's| = {err:.1e}")


async def _bus_sweep(engines: list[str], points: int, repeats: int) -> dict[str, tuple]:
    from qbus.bus.config import BusConfig, Config
    from qbus.bus.server import NatsServer
    from qbus.client import Client
    from qbus.consumers.pipeline import Pipeline
    from qbus.schemas.events import JobCompleted

    circuit = sweep_circuit()
    sweep = sweep_points(points, np.random.default_rng(7))
    results: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats", port=-1) as server:
        config = Config(bus=BusConfig(url=server.url), state_dir=str(Path(tmp) / "state"))
        async with Pipeline(config, engines=tuple(engines)), Client(server.url) as client:
            for name in engines:
                times = []
                for _ in range(repeats + 1):  # the first compiles (jax) and warms caches
                    start = time.perf_counter()
                    job = await client.submit(
                        circuit,
                        engine=name,
                        method="sweep",
                        sweep=sweep,
                        observables=ising_energy(),
                    )
                    final = await job.result(timeout=600)
                    times.append(time.perf_counter() - start)
                    if not isinstance(final, JobCompleted):
                        raise SystemExit(f"bus sweep on {name} did not complete: {final}")
                    if final.verification.verdict != "pass":
                        raise SystemExit(f"bus sweep on {name}: {final.verification}")
                rest = times[1:] or times
                results[name] = (times[0], min(rest), statistics.median(rest))
    return results


def bench_bus_sweep(engines: list[str], points: int, repeats: int) -> None:
    """Row ``bus sweep …``: the sweep job end to end through nats-server and every stage."""
    results = asyncio.run(_bus_sweep(engines, points, repeats))
    _print_rows(f"bus sweep {SWEEP_QUBITS}q x{points}", results)


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[12, 16, 20, 22, 24])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-points", type=int, default=256)
    parser.add_argument(
        "--engines",
        nargs="*",
        default=None,
        help=f"registry engines after aer and jax (default: {' '.join(OTHERS)}; none with --quick)",
    )
    parser.add_argument("--budget", type=float, default=60.0, help="seconds; see the doc")
    parser.add_argument("--no-bus", action="store_true", help="skip the bus sweep row")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 8 and 10 qubits, 16-point sweep"
    )
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.sweep_points, args.repeats = [8, 10], 16, 2
    if args.engines is None:
        args.engines = [] if args.quick else list(OTHERS)
    engines = load_engines(args.engines)
    if not engines:
        print("no engine available")
        return 1
    header = (
        f"{'case':<22} {'engine':<12} {'first s':>9} {'best s':>9} {'median s':>9} {'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    bench_statevectors(engines, args.qubits, args.repeats, args.budget)
    bench_sweep(engines, args.sweep_points, args.repeats, args.budget)
    if not args.no_bus:
        bench_bus_sweep(
            [e for e in (BASELINE, "jax") if e in engines], args.sweep_points, args.repeats
        )
    print(f"\nratio: best time / {BASELINE} best time; 'first' includes JAX's jit compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
