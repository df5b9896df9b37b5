"""The jax engine on a GPU against Aer on the same machine's CPU: correctness, then speed.

Needs a machine where JAX sees a GPU (it says so and exits otherwise). Runs, in one go:

1. Correctness on the GPU: state fidelity to Aer's state of the layered circuits of
   ``benchmarks/engines.py`` (complex128 and complex64), and the largest difference of a
   sweep's expectation values from Aer's.
2. State vectors: the same circuits (20 layers of ry/rz and a CNOT ladder) at each width
   of ``--qubits``, jax on the GPU in both precisions against Aer on every CPU core.
3. Sweeps: ``qubits x points`` of ``--sweeps`` (48 angles, the Ising energy), jax on the
   GPU against Aer's parameter binds in one call.

Prints one table (seconds: the first call, with the jit compile; best and median of
``--repeats``; ratio = best / Aer's best) and writes it as JSON to ``--json``.

    python benchmarks/jax_gpu.py --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engines import (
    DEPTH,
    ising_energy,
    layered_circuit,
    sweep_circuit,
    timed_interleaved,
)
from qbus.engines.base import RunRequest

Row = dict[str, object]


def _points(n: int, count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    names = sweep_circuit(n).parameters
    return [
        dict(zip(names, rng.uniform(0, 6.28, len(names)).tolist(), strict=True))
        for _ in range(count)
    ]


def check_correctness(engines: dict, widths: list[int], rows: list[Row]) -> None:
    aer = engines["qiskit-aer"]
    rng = np.random.default_rng(11)
    for n in widths:
        request = RunRequest(circuit=layered_circuit(n, DEPTH, rng), method="statevector")
        exact = np.asarray(aer.run(request).statevector)
        for name in ("jax-gpu", "jax-gpu-c64"):
            psi = np.asarray(engines[name].run(request).statevector)
            fidelity = abs(np.vdot(exact, psi)) ** 2
            rows.append({"check": f"1 - fidelity n={n}", "engine": name, "value": 1 - fidelity})
    request = RunRequest(
        circuit=sweep_circuit(12),
        method="sweep",
        sweep=_points(12, 256, np.random.default_rng(7)),
        observables=ising_energy(12),
    )
    exact = [p.expectations for p in aer.run(request).sweep_results or []]
    for name in ("jax-gpu", "jax-gpu-c64"):
        got = [p.expectations for p in engines[name].run(request).sweep_results or []]
        err = float(np.max(np.abs(np.asarray(got) - np.asarray(exact))))
        rows.append({"check": "sweep 12q x256 max |<H> - Aer|", "engine": name, "value": err})


def bench(
    engines: dict, case: str, request: RunRequest, repeats: int, budget: float, rows: list[Row]
) -> None:
    fns = {name: (lambda e=engine: e.run(request)) for name, engine in engines.items()}
    results = timed_interleaved(fns, repeats, budget)
    base = results["qiskit-aer"][1] if "qiskit-aer" in results else None
    for name, (first, best, median) in results.items():
        ratio = best / base if base else float("nan")
        rows.append(
            {
                "case": case,
                "engine": name,
                "first": first,
                "best": best,
                "median": median,
                "ratio": ratio,
            }
        )
        print(
            f"{case:<24} {name:<12} {first:9.3f} {best:9.3f} {median:9.3f} {ratio:8.3f}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[20, 22, 24, 26, 28])
    parser.add_argument("--check-qubits", type=int, nargs="+", default=[10, 16, 20])
    parser.add_argument("--sweeps", nargs="+", default=["12x256", "12x4096", "16x1024", "20x64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--budget", type=float, default=20.0, help="no repeats past this first time"
    )
    parser.add_argument("--aer-max-qubits", type=int, default=26)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without a GPU (to try the script)"
    )
    args = parser.parse_args()

    import jax

    from qbus.engines.aer import AerEngine
    from qbus.engines.jax_engine import JaxEngine

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus and not args.allow_cpu:
        print("no GPU visible to JAX: nothing to measure here", file=sys.stderr)
        return 2
    device = gpus[0].device_kind if gpus else "the CPU"
    print(f"jax {jax.__version__} on {device}; Aer on {os.cpu_count()} CPU cores", flush=True)
    engines = {
        "qiskit-aer": AerEngine(),
        "jax-gpu": JaxEngine(),
        "jax-gpu-c64": JaxEngine("complex64"),
    }
    assert engines["jax-gpu"].capabilities.device == ("gpu" if gpus else "cpu")

    checks: list[Row] = []
    check_correctness(engines, args.check_qubits, checks)
    for row in checks:
        print(f"{row['check']:<34} {row['engine']:<12} {row['value']:.3e}", flush=True)

    rows: list[Row] = []
    print(f"{'case':<24} {'engine':<12} {'first':>9} {'best':>9} {'median':>9} {'ratio':>8}")
    rng = np.random.default_rng(2024)
    for n in args.qubits:
        request = RunRequest(circuit=layered_circuit(n, DEPTH, rng), method="statevector")
        chosen = {k: v for k, v in engines.items() if k != "qiskit-aer" or n <= args.aer_max_qubits}
        if "qiskit-aer" not in chosen:
            print(f"note: no Aer baseline at {n} qubits (--aer-max-qubits)", flush=True)
        bench(chosen, f"statevector n={n}", request, args.repeats, args.budget, rows)
    for spec in args.sweeps:
        n, count = (int(x) for x in spec.split("x"))
        request = RunRequest(
            circuit=sweep_circuit(n),
            method="sweep",
            sweep=_points(n, count, np.random.default_rng(7)),
            observables=ising_energy(n),
        )
        bench(engines, f"sweep {n}q x{count}", request, args.repeats, args.budget, rows)
    if args.json:
        args.json.write_text(
            json.dumps({"checks": checks, "rows": rows, "jax": jax.__version__}, indent=1)
        )
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"total {time.perf_counter() - started:.0f} s")
    raise SystemExit(code)
