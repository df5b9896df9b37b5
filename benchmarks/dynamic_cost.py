"""Cost of shot-by-shot jobs: fit the ``shot_by_shot`` row and check it against Aer runs.

    .venv/bin/python -m benchmarks.dynamic_cost --calibrate  # fit, merge into cost_defaults.json
    .venv/bin/python -m benchmarks.dynamic_cost --check      # predicted vs measured, held back

A circuit with mid-circuit measurements, resets after gates or ``if`` blocks must be
simulated once per shot (``qbus.schemas.ir.shot_by_shot``), so a ``sample`` job of it
costs about shots × one state evolution. The programs here are layered random circuits
(one-qubit gates on every qubit, a ring of ``cx``) with, after each layer, a measurement,
a conditional ``x`` and a reset on a few qubits. Calibration uses seed 1 (6-18 qubits,
10-300 shots); ``--check`` uses seed 2 and 10-1000 shots, so what it reports was not
fitted on. Each program runs once, directly on the engine (no bus), as
``ExecutionCompleted.run_seconds`` measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.program import parse_program
from qbus.router.cost import DEFAULTS_FILE, SHOT_BY_SHOT, CostModel, features, fit
from qbus.schemas.ir import Circuit, shot_by_shot

ONE_QUBIT = ("h", "x", "sx", "rz", "ry", "t")
DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "qbus" / "router" / DEFAULTS_FILE


def dynamic_program(rng: random.Random, qubits: int, layers: int, resets: int) -> str:
    """OpenQASM 3: ``layers`` random layers, each followed by ``resets`` qubits measured,
    conditionally flipped on their neighbour, and reset."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for _ in range(layers):
        for q in range(qubits):
            name = rng.choice(ONE_QUBIT)
            angle = f"({rng.uniform(0, 6.28):.3f})" if name in ("rz", "ry") else ""
            lines.append(f"{name}{angle} q[{q}];")
        lines += [f"cx q[{q}], q[{q + 1}];" for q in range(rng.randrange(2), qubits - 1, 2)]
        for q in rng.sample(range(qubits), min(resets, qubits)):
            t = (q + 1) % qubits
            lines += [
                f"c[{q}] = measure q[{q}];",
                f"if (c[{q}] == 1) {{ x q[{t}]; }}",
                f"reset q[{q}];",
            ]
    lines += [f"c[{q}] = measure q[{q}];" for q in range(qubits)]
    return "\n".join(lines) + "\n"


def corpus(
    seed: int, count: int, qubits: tuple[int, int], shots_from: tuple[int, ...] = (10, 30, 100, 300)
) -> list[tuple[Circuit, int, str]]:
    """``count`` (circuit, shots, label) of dynamic programs of ``qubits`` width."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        n = rng.randint(*qubits)
        layers = rng.randint(1, 8)
        resets = rng.randint(1, 3)
        shots = rng.choice(shots_from)
        circuit, _ = parse_program(dynamic_program(rng, n, layers, resets), "qasm3")
        assert shot_by_shot(circuit)
        jobs.append((circuit, shots, f"{n}q {layers}x{resets} resets"))
    return jobs


def run_seconds(engine: str, circuit: Circuit, shots: int) -> float:
    """One run's wall time on ``engine`` (as ExecutionCompleted.run_seconds)."""
    eng = get_engine(engine)
    started = time.perf_counter()
    eng.run(RunRequest(circuit=circuit, method="sample", shots=shots, seed=1))
    return time.perf_counter() - started


def calibrate(engine: str, count: int, out: Path, max_qubits: int, most: float) -> None:
    """Fit ``engine``'s ``shot_by_shot`` row on seed 1 and merge it into ``out``; a program
    whose run the current model puts above ``most`` seconds is skipped."""
    model = CostModel.load_defaults()
    jobs = corpus(1, count, (6, max_qubits))
    run_seconds(engine, jobs[0][0], 1)  # warm: imports, first-call set-up
    rows = []
    for i, (circuit, shots, label) in enumerate(jobs):
        feats = features(circuit, "sample", shots)
        if model.base_seconds(engine, feats) > most:
            print(f"  {i + 1:3d}/{len(jobs)} {label:22s} skipped", file=sys.stderr)
            continue
        seconds = run_seconds(engine, circuit, shots)
        rows.append((feats, seconds))
        print(
            f"  {i + 1:3d}/{len(jobs)} {label:22s} {feats.ops:5d} ops {shots:4d} shots "
            f"{seconds * 1e3:9.1f} ms",
            file=sys.stderr,
        )
    doc = json.loads(out.read_text())
    doc["coefficients"].setdefault(engine, {})[SHOT_BY_SHOT] = fit(rows)
    doc["meta"][SHOT_BY_SHOT] = {
        "machine": f"{platform.node()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load": Path("/proc/loadavg").read_text().split()[0]
        if Path("/proc/loadavg").exists()
        else "",
        "corpus": f"benchmarks/dynamic_cost.py seed 1, {len(rows)} programs, "
        f"6-{max_qubits} qubits, 10-300 shots",
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}: {engine} {SHOT_BY_SHOT} = {doc['coefficients'][engine][SHOT_BY_SHOT]}")


def check(engine: str, count: int, max_qubits: int, most: float) -> None:
    """Predicted vs measured on held-back programs (seed 2, 10-1000 shots), with the
    shipped model; a program predicted to take more than ``most`` seconds is skipped."""
    model = CostModel.load_defaults()
    jobs = corpus(2, count, (6, max_qubits), (10, 30, 100, 300, 1000))
    run_seconds(engine, jobs[0][0], 1)
    print(f"{'program':22s} {'ops':>5s} {'shots':>5s} {'predicted':>10s} {'measured':>10s} ratio")
    for circuit, job_shots, label in jobs:
        feats = features(circuit, "sample", job_shots)
        predicted = model.base_seconds(engine, feats)
        if predicted > most:
            print(f"{label:22s} {feats.ops:5d} {job_shots:5d} {predicted:9.3f}s  (skipped)")
            continue
        measured = run_seconds(engine, circuit, job_shots)
        print(
            f"{label:22s} {feats.ops:5d} {job_shots:5d} {predicted:9.3f}s {measured:9.3f}s "
            f"{predicted / measured:5.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="fit and merge the row")
    parser.add_argument("--check", action="store_true", help="predicted vs measured")
    parser.add_argument("--engine", default="qiskit-aer")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--max-qubits", type=int, default=18)
    parser.add_argument("--most", type=float, default=60.0, help="skip jobs predicted longer")
    parser.add_argument("--out", type=Path, default=DEFAULTS_PATH)
    args = parser.parse_args(argv)
    if args.calibrate:
        calibrate(args.engine, args.count or 40, args.out, args.max_qubits, args.most)
    if args.check:
        check(args.engine, args.count or 10, args.max_qubits, args.most)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
