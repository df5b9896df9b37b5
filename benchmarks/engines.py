"""Engines head to head: random state-vector circuits and a parameter sweep.

1. State vectors: per layer an ``ry`` and an ``rz`` on every qubit then a CNOT ladder,
   20 layers, at each width of ``--qubits``, method ``statevector``, through each
   engine's ``run``. A warm-up run comes first (for JAX it includes the jit compile,
   reported separately as ``first``), then the best and median of ``--repeats`` runs.
2. Sweep: a 12-qubit circuit with 48 named angles at 256 random points: the jax
   engine's vmapped ``sweep`` against a loop of ``run`` calls on every other engine.

Prints a table of seconds and ratios to qiskit-aer (``ratio`` < 1: faster than Aer).

    python benchmarks/engines.py --qubits 12 16 20 22 24 --repeats 3
    python benchmarks/engines.py --quick        # CI smoke test, well under a minute
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from qbus.engines.base import Engine, RunRequest
from qbus.errors import QbusError
from qbus.schemas.ir import Circuit, Op

ENGINES: list[tuple[str, str]] = [
    ("qiskit-aer", "qbus.engines.aer:AerEngine"),
    ("jax", "qbus.engines.jax_engine:JaxEngine"),
    ("jax-c64", "qbus.engines.jax_engine:JaxEngine:complex64"),
]
"""Engines benchmarked by default, as (name, ``module:Class``[``:arg``]); the optional
third part is passed to the constructor (``jax-c64``: the jax engine in complex64)."""

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


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """(first call, best, median of ``repeats`` further calls) in seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return first, min(runs), statistics.median(runs)


def _row(case: str, name: str, first: float, best: float, median: float, base: float | None) -> str:
    ratio = f"{best / base:8.2f}" if base else f"{'-':>8}"
    return f"{case:<22} {name:<12} {first:>9.3f} {best:>9.3f} {median:>9.3f} {ratio}"


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[12, 16, 20, 22, 24])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-points", type=int, default=256)
    parser.add_argument("--engines", nargs="*", default=[], help="more engines, by registry name")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 8 and 10 qubits, 16-point sweep"
    )
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.sweep_points, args.repeats = [8, 10], 16, 2
    engines = load_engines(args.engines)
    if not engines:
        print("no engine available")
        return 1
    rng = np.random.default_rng(2024)
    header = (
        f"{'case':<22} {'engine':<12} {'first s':>9} {'best s':>9} {'median s':>9} {'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in args.qubits:
        circuit = layered_circuit(n, DEPTH, rng)
        request = RunRequest(circuit=circuit, method="statevector")
        results = {}
        for name, engine in engines.items():
            limit = engine.capabilities.max_qubits.get("statevector", 0)
            if "statevector" not in engine.capabilities.methods or n > limit:
                print(f"note: {name} cannot run {n}-qubit state vectors")
                continue
            results[name] = timed(lambda e=engine, r=request: e.run(r), args.repeats)
        base = results.get(BASELINE, (None, None, None))[1]
        for name, (first, best, median) in results.items():
            print(_row(f"statevector n={n}", name, first, best, median, base), flush=True)

    sweep = sweep_circuit()
    points = [
        {
            p: float(v)
            for p, v in zip(sweep.parameters, rng.uniform(0, 6.28, SWEEP_PARAMS), strict=True)
        }
        for _ in range(args.sweep_points)
    ]
    case = f"sweep {SWEEP_QUBITS}q x{args.sweep_points}"
    results = {}
    for name, engine in engines.items():
        sweep_fn = getattr(engine, "sweep", None)
        if sweep_fn is not None:
            fn = lambda f=sweep_fn: f(sweep, points)  # noqa: E731
        else:
            fn = lambda e=engine: [  # noqa: E731
                e.run(RunRequest(circuit=sweep, method="statevector", parameters=p)) for p in points
            ]
        results[name] = timed(fn, args.repeats)
    base = results.get(BASELINE, (None, None, None))[1]
    for name, (first, best, median) in results.items():
        print(_row(case, name, first, best, median, base), flush=True)
    print(f"\nratio: best time / {BASELINE} best time; 'first' includes JAX's jit compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
