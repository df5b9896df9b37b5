"""Engines head to head on several circuit families, against the libraries called directly.

1. State vectors (``--families`` at each width of ``--qubits``, method ``statevector``):
   random 1-/2-qubit circuits, QFT, a layered ry/rz + CNOT-ladder ansatz, GHZ and a
   Trotter step of the transverse-field Ising chain (``engine_circuits.py``). Each case
   runs through qbus's engines (``qiskit-aer``, ``qsim``, ``jax`` in complex128 and
   ``jax-c64``) and through Aer and qsim called directly (``engine_direct.py``: the
   library's own circuit, built before any timing, at its best CPU settings; qsim at
   every fusion size of ``--qsim-fuse``). ``qbus/direct`` is the wrapper's own cost.
2. Sweeps (``--ansatze`` at each width of ``--sweep-qubits``, ``--sweep-points`` random
   points, the Ising energy as the observable): jax's batched kernel (c128, c64),
   qsim through qbus (point by point), Aer through qbus, and Aer directly: ONE ``run``
   binding every point (``parameter_binds``), its best usage.
3. Optionally (``--bus``) a sweep job end to end through a real nats-server.

Every case first calls each contender once alone (``first``: JAX's compile, caches),
then ``--repeats`` rounds call each contender once in turn, so a slow spell of a shared
machine falls on all of them; the best and the median are reported. A contender whose
first call takes longer than ``--budget`` seconds is not repeated there and skips the
larger widths of that family. Per width, the memory-bandwidth floor: one full read and
write of the state at the bandwidth a numpy copy of a state-sized array reaches in the
same run; ``×floor`` is each best time over the floor at the engine's precision.

    python benchmarks/engines.py                  # full: 16 20 24 26 qubits, sweeps at 12 16
    python benchmarks/engines.py --write-docs     # the same, then rewrites docs/engines.md's table
    python benchmarks/engines.py --quick          # smoke test, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_circuits import (
    ANSATZE,
    DEPTH,
    FAMILIES,
    ising_energy,
    layered_circuit,
    sweep_circuit,
    sweep_points,
)
from benchmarks.engine_direct import (
    CORES,
    aer_statevector,
    aer_sweep,
    qsim_statevector,
)
from qbus.bus.config import BusConfig, Config
from qbus.bus.server import NatsServer
from qbus.client import Client
from qbus.consumers.pipeline import Pipeline
from qbus.engines.aer import AerEngine
from qbus.engines.base import Engine, RunRequest
from qbus.engines.cirq_engine import QsimEngine, qsim_fuse_size
from qbus.engines.jax_engine import JaxEngine
from qbus.engines.registry import get_engine
from qbus.errors import QbusError
from qbus.schemas.events import JobCompleted

__all__ = ["DEPTH", "ising_energy", "layered_circuit", "sweep_circuit", "timed_interleaved"]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "engines.md"
BEGIN, END = "<!-- engines-table:begin -->", "<!-- engines-table:end -->"


Result = tuple[float, float, float]
"""(first call, best, median) in seconds."""


def timed_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    budget: float,
    check: Callable[[str, object], None] | None = None,
) -> dict[str, Result]:
    """(first call, best, median of ``repeats`` further calls) in seconds, per contender.

    Each first call runs alone (compiles, warm-up) and its result goes to ``check``;
    then every round runs each contender once, so a slow spell of a shared machine falls
    on all of them rather than on whichever ran at the time. A first call slower than
    ``budget`` is not repeated: its time stands for all three.
    """
    firsts: dict[str, float] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        out = fn()
        firsts[name] = time.perf_counter() - start
        if check is not None:
            check(name, out)
        del out  # a 26-qubit state is 1 GiB: not kept past its check
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


def bandwidth(n: int, tries: int = 5) -> float:
    """Bytes per second of a numpy copy of a complex128 array of ``2**n`` amplitudes.

    A copy reads and writes every byte once: what the simplest pass of a simulator over
    the state costs at best.
    """
    src = np.ones(2**n, dtype=np.complex128)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def floor_seconds(engine: str, n: int, bytes_per_s: float) -> float:
    """One full read + write of the ``n``-qubit state at ``engine``'s precision."""
    # qsim computes in complex64, directly or through qbus.
    width = 8 if engine.startswith("qsim") or engine.endswith("c64") else 16
    return 2 * width * 2**n / bytes_per_s


def load_engines(names: list[str]) -> dict[str, Engine]:
    """qbus's engines by benchmark name (``jax-c64``: the jax engine in complex64)."""
    makers: dict[str, Callable[[], Engine]] = {
        "qiskit-aer": AerEngine,
        "qsim": QsimEngine,
        "jax": JaxEngine,
        "jax-c64": lambda: JaxEngine("complex64"),
    }
    engines: dict[str, Engine] = {}
    for name in names:
        try:
            engines[name] = makers[name]() if name in makers else get_engine(name)
        except (ImportError, QbusError) as exc:
            print(f"note: skipping {name}: {exc}")
    return engines


def _fidelity_check(reference: dict[str, np.ndarray], case: str) -> Callable[[str, object], None]:
    """A ``check`` printing 1 - |<ref|state>|^2 of each state against the first one."""

    def check(name: str, out: object) -> None:
        state = np.asarray(getattr(out, "statevector", out), dtype=np.complex128).reshape(-1)
        if "ref" not in reference:
            reference["ref"] = state
            return
        ref = reference["ref"]
        loss = 1 - abs(np.vdot(ref, state)) ** 2 / (
            np.vdot(ref, ref).real * np.vdot(state, state).real
        )
        if loss > 1e-5:
            print(f"WARNING: {case} {name}: 1 - fidelity to aer-direct = {loss:.1e}")

    return check


def bench_statevectors(
    engines: dict[str, Engine], args: argparse.Namespace, rows: list[dict[str, Any]]
) -> None:
    """Rows ``<family> n=…``: every family at every width, through qbus and directly."""
    too_slow: set[tuple[str, str]] = set()
    for n in args.qubits:
        bw = bandwidth(n)
        print(
            f"note: n={n}: numpy copy {bw / 1e9:.1f} GB/s, floor c128 "
            f"{floor_seconds('jax', n, bw) * 1e3:.2f} ms",
            flush=True,
        )
        for family in args.families:
            circuit = FAMILIES[family](n, np.random.default_rng(2024 + n))
            request = RunRequest(circuit=circuit, method="statevector")
            fns: dict[str, Callable[[], object]] = {}
            if args.direct:
                fns["aer-direct"] = aer_statevector(circuit)
                for f in args.qsim_fuse:
                    fns[f"qsim-f{f}"] = qsim_statevector(circuit, f)
            for name, engine in engines.items():
                fns[name] = lambda e=engine, r=request: e.run(r)
            for name in list(fns):
                limit = (
                    engines[name].capabilities.max_qubits.get("statevector", 0)
                    if name in engines
                    else 99
                )
                if (name, family) in too_slow or n > limit:
                    print(f"note: {name} skips {family} n={n} (over the budget or max {limit})")
                    del fns[name]
            case = f"{family} n={n}"
            results = timed_interleaved(fns, args.repeats, args.budget, _fidelity_check({}, case))
            too_slow.update((name, family) for name, r in results.items() if r[0] > args.budget)
            for name, (first, best, median) in results.items():
                floor = floor_seconds(name, n, bw)
                rows.append(
                    {
                        "kind": "sv",
                        "family": family,
                        "n": n,
                        "engine": name,
                        "first": first,
                        "best": best,
                        "median": median,
                        "floor": floor,
                    }
                )
                print(
                    f"{family:<8} n={n:<3} {name:<12} {first:>9.4f} {best:>9.4f} "
                    f"{median:>9.4f} {best / floor:>8.1f}",
                    flush=True,
                )
            _print_ratios(case, results, engines)


def wrapper_fuse(n: int) -> int:
    """The fusion size qbus's qsim engine picks at ``n`` qubits (for a like-for-like ratio)."""
    return qsim_fuse_size(n)


def _print_ratios(case: str, results: dict[str, Result], engines: dict[str, Engine]) -> None:
    best = {name: r[1] for name, r in results.items()}
    parts = []
    if "aer-direct" in best and "qiskit-aer" in best:
        parts.append(f"aer qbus/direct {best['qiskit-aer'] / best['aer-direct']:.2f}")
    qsim_direct = {k: v for k, v in best.items() if k.startswith("qsim-f")}
    if qsim_direct:
        fastest = min(qsim_direct, key=qsim_direct.__getitem__)
        n = int(case.split("n=")[1])
        same = f"qsim-f{wrapper_fuse(n)}"
        if "qsim" in best and same in best:
            parts.append(f"qsim qbus/direct({same[5:]}) {best['qsim'] / best[same]:.2f}")
        parts.append(f"qsim best {fastest[5:]}")
        for jax in ("jax", "jax-c64"):
            if jax in best:
                parts.append(f"{jax}/qsim {best[jax] / qsim_direct[fastest]:.2f}")
    if parts:
        print(f"ratio {case}: " + ", ".join(parts), flush=True)


def bench_sweeps(
    engines: dict[str, Engine], args: argparse.Namespace, rows: list[dict[str, Any]]
) -> None:
    """Rows ``sweep <ansatz> n=…``: method ``sweep`` with the Ising energy per point."""
    for n in args.sweep_qubits:
        for ansatz in args.ansatze:
            circuit = ANSATZE[ansatz](n)
            points = sweep_points(circuit, args.sweep_points, np.random.default_rng(7))
            request = RunRequest(
                circuit=circuit, method="sweep", sweep=points, observables=ising_energy(n)
            )
            fns: dict[str, Callable[[], object]] = {}
            if args.direct:
                fns["aer-direct"] = aer_sweep(circuit, ising_energy(n), points)
            for name, engine in engines.items():
                if "sweep" in engine.capabilities.methods:
                    fns[name] = lambda e=engine, r=request: e.run(r)
            values: dict[str, np.ndarray] = {}

            def keep(name: str, out: object, values: dict[str, np.ndarray] = values) -> None:
                if isinstance(out, np.ndarray):
                    values[name] = out.reshape(-1)
                else:
                    points_out = getattr(out, "sweep_results", None) or []
                    values[name] = np.array([p.expectations for p in points_out]).reshape(-1)

            results = timed_interleaved(fns, args.repeats, args.budget, keep)
            case = f"{ansatz} n={n}"
            for name, (first, best, median) in results.items():
                rows.append(
                    {
                        "kind": "sweep",
                        "family": ansatz,
                        "n": n,
                        "engine": name,
                        "first": first,
                        "best": best,
                        "median": median,
                        "params": len(circuit.parameters),
                        "points": len(points),
                    }
                )
                print(
                    f"sweep {ansatz:<10} n={n:<3} {name:<12} {first:>9.4f} {best:>9.4f} "
                    f"{median:>9.4f}",
                    flush=True,
                )
            base = values.get("aer-direct", values.get("qiskit-aer"))
            if base is not None:
                for name, v in values.items():
                    err = float(np.max(np.abs(v - base))) if v.shape == base.shape else float("nan")
                    if not err < (1e-3 if name == "jax-c64" or name == "qsim" else 1e-8):
                        print(f"WARNING: sweep {case} {name}: largest |<H> - Aer's| = {err:.1e}")
            if "aer-direct" in results:
                aer = results["aer-direct"][1]
                print(
                    f"ratio sweep {case}: "
                    + ", ".join(
                        f"aer-direct/{name} {aer / r[1]:.2f}"
                        for name, r in results.items()
                        if name != "aer-direct"
                    ),
                    flush=True,
                )


async def _bus_sweep(engines: list[str], points: int, repeats: int) -> dict[str, Result]:
    circuit = sweep_circuit()
    sweep = sweep_points(circuit, points, np.random.default_rng(7))
    results: dict[str, Result] = {}
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


def provenance(argv: list[str]) -> str:
    """``python benchmarks/engines.py …``, the UTC date, the commit (+dirty) and the load."""
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        or "unknown"
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    command = " ".join(["python benchmarks/engines.py", *argv])
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"`{command}`, {date}, commit {commit}{'+dirty' if dirty else ''}"


def _cell(rows: dict[str, dict[str, Any]], name: str, floor: bool = True) -> str:
    row = rows.get(name)
    if row is None:
        return "—"
    text = f"{row['best']:.3g}"
    return f"{text} ({row['best'] / row['floor']:.0f}×)" if floor and "floor" in row else text


def _ratio(rows: dict[str, dict[str, Any]], top: str, bottom: str) -> str:
    if top in rows and bottom in rows:
        return f"{rows[top]['best'] / rows[bottom]['best']:.2f}"
    return "—"


def render_table(rows: list[dict[str, Any]], header: str, loads: tuple[str, str]) -> str:
    """The markdown between the doc's markers: both tables and their provenance."""
    out = [
        f"Measured by {header}; {platform.machine()}, {CORES} cores; load average "
        f"(1/5/15 min) {loads[0]} before, {loads[1]} after. Best of the repeats in seconds; "
        "in brackets, that time as a multiple of the memory-bandwidth floor (one read + "
        "write of the state at the engine's precision, numpy-copy bandwidth of the same "
        "run). qsim direct: the fastest fusion size `f` (shown). qbus/direct: the wrapper "
        "over the library called directly with the same settings.",
        "",
        "| family | n | Aer direct | Aer qbus | qbus/direct | qsim direct (f) | qsim qbus "
        "| qbus/direct | jax c128 | jax c64 | jax first s | jax / qsim | jax c64 / qsim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cases: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "sv":
            cases.setdefault((row["family"], row["n"]), {})[row["engine"]] = row
    for (family, n), by in sorted(cases.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        qsims = {k: v for k, v in by.items() if k.startswith("qsim-f")}
        fastest = min(qsims, key=lambda k: qsims[k]["best"]) if qsims else None
        if fastest:
            by["qsim-best"] = qsims[fastest]
        same = f"qsim-f{wrapper_fuse(n)}"
        qsim_cell = f"{_cell(by, 'qsim-best')} (f{fastest[6:]})" if fastest else "—"
        jax_first = f"{by['jax']['first']:.3g}" if "jax" in by else "—"
        out.append(
            f"| {family} | {n} | {_cell(by, 'aer-direct')} | {_cell(by, 'qiskit-aer')} "
            f"| {_ratio(by, 'qiskit-aer', 'aer-direct')} | {qsim_cell} | {_cell(by, 'qsim')} "
            f"| {_ratio(by, 'qsim', same)} | {_cell(by, 'jax')} | {_cell(by, 'jax-c64')} "
            f"| {jax_first} | {_ratio(by, 'jax', 'qsim-best')} "
            f"| {_ratio(by, 'jax-c64', 'qsim-best')} |"
        )
    sweeps: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "sweep":
            sweeps.setdefault((row["family"], row["n"]), {})[row["engine"]] = row
    if sweeps:
        out += [
            "",
            "Sweeps: the Ising energy at every point, seconds (best); Aer direct is ONE "
            "`run` binding every point; qsim goes point by point through qbus; speed-up = "
            "Aer direct / jax.",
            "",
            "| ansatz | n × points (params) | Aer direct | Aer qbus | qsim qbus | jax c128 "
            "| jax c64 | jax first s | speed-up c128 | speed-up c64 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (ansatz, n), by in sorted(sweeps.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            any_row = next(iter(by.values()))
            jax_first = f"{by['jax']['first']:.3g}" if "jax" in by else "—"
            out.append(
                f"| {ansatz} | {n} × {any_row['points']} ({any_row['params']}) "
                f"| {_cell(by, 'aer-direct')} | {_cell(by, 'qiskit-aer')} | {_cell(by, 'qsim')} "
                f"| {_cell(by, 'jax')} | {_cell(by, 'jax-c64')} | {jax_first} "
                f"| {_ratio(by, 'aer-direct', 'jax')} | {_ratio(by, 'aer-direct', 'jax-c64')} |"
            )
    return "\n".join(out)


def write_docs(path: Path, table: str) -> None:
    """Replace what lies between the markers in ``path`` by ``table``, nothing else."""
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{path}: expected one {BEGIN} before one {END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    """Run the benchmark, print the table, and with ``--write-docs`` put it in the doc."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="*", default=[16, 20, 24, 26])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--sweep-qubits", type=int, nargs="*", default=[12, 16])
    parser.add_argument("--ansatze", nargs="+", default=list(ANSATZE), choices=list(ANSATZE))
    parser.add_argument("--sweep-points", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["qiskit-aer", "qsim", "jax", "jax-c64"],
        help="qbus engines (registry names, and jax-c64); default: qiskit-aer qsim jax jax-c64",
    )
    parser.add_argument(
        "--qsim-fuse",
        type=int,
        nargs="+",
        default=[2, 3, 4],
        help="qsim fusion sizes (max_fused_gate_size) to run directly; the best is reported",
    )
    parser.add_argument(
        "--no-direct", dest="direct", action="store_false", help="skip Aer and qsim called directly"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds: a slower first call is not repeated and skips larger widths",
    )
    parser.add_argument("--bus", action="store_true", help="also a sweep job through the bus")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 10 qubits, a 6-qubit 16-point sweep, aer/qsim/jax",
    )
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=str(DOC),
        default=None,
        metavar="PATH",
        help=f"rewrite the table between the markers of PATH (default {DOC})",
    )
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.quick:
        args.qubits, args.sweep_qubits, args.sweep_points, args.repeats = [10], [6], 16, 2
        args.engines = [e for e in args.engines if e != "jax-c64"]
    loads = (_load(), "")
    header = provenance(argv)
    print(f"load average {loads[0]}; {header}", flush=True)
    engines = load_engines(args.engines)
    print(f"{'case':<12} {'engine':<12} {'first s':>9} {'best s':>9} {'median s':>9} {'×floor':>8}")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    bench_statevectors(engines, args, rows)
    bench_sweeps(engines, args, rows)
    if args.bus:
        names = [e for e in ("qiskit-aer", "jax") if e in engines]
        for name, (first, best, median) in asyncio.run(
            _bus_sweep(names, args.sweep_points, args.repeats)
        ).items():
            print(f"bus sweep hea n=12 {name:<12} {first:>9.4f} {best:>9.4f} {median:>9.4f}")
    loads = (loads[0], _load())
    print(f"load average {loads[1]}; took {time.perf_counter() - start:.0f} s", flush=True)
    if args.write_docs:
        write_docs(Path(args.write_docs), render_table(rows, header, loads))
        print(f"wrote the table into {args.write_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
