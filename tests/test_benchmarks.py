"""The benchmarks run end to end (short form; full runs are `python benchmarks/...`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bus_overhead_benchmark_runs_and_completes_every_job():
    jobs = "60" if os.environ.get("CI") == "true" else "200"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bus_overhead.py"),
            "--jobs",
            jobs,
            "--sequential",
            "20",
            "--repeats",
            "2",
            "--warmup",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "jobs not completed: 0" in out.stdout
    rows = ["direct (parse + Aer run)"]
    rows += [f"{name}, turn {t}" for t in (1, 2) for name in ("bare pipeline", "qbus")]
    for row in rows:
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(row))
        rate, p50, p99, *single = (float(x) for x in line[len(row) :].split())
        assert rate > 0 and 0 < p50 <= p99
        assert all(x > 0 for x in single)
    # Both ratios, from turns measured in the same run.
    ratios = [ln for ln in out.stdout.splitlines() if "qbus / bare" in ln]
    assert len(ratios) == 2 and all("median" in ln for ln in ratios)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_hop_latency_benchmark_prints_every_hop():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hop_latency.py"), "--jobs", "5"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {ln.split()[0]: [float(x) for x in ln.split()[1:]] for ln in out.stdout.splitlines()[2:]}
    assert list(rows) == ["ingested", "rewritten", "exec", "executed", "result"]
    for hop, made, stored in rows.values():
        assert 0 < made < hop and 0 < stored < hop


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sandbox_benchmark_prints_every_driver():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sandbox.py"), "--runs", "20"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.stdout.splitlines()[1:]}
    assert {"inline", "process", "bwrap"} <= set(rows)
    assert all(float(p50) > 0 for p50, *_ in rows.values())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_statevector_memory_benchmark_prints_a_growing_peak_per_width():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "statevector_memory.py"),
            "--qubits",
            "12",
            "18",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln.split() for ln in out.stdout.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [12, 18]
    assert [r[1] for r in rows] == ["0.1", "4.0"]  # the state, 16 B x 2^n, in MiB
    small, large = (float(r[2]) for r in rows)
    # A 4 MiB state adds at least its own size to the peak.
    assert large - small >= 4 * (1 - 2**-6), rows


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_engines_benchmark_quick_run_prints_every_engine_row():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engines.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(("statevector", "sweep"))]
    # case words, engine, first, best, median, ratio
    engines = {row[-5] for row in rows}
    assert {"qiskit-aer", "jax"} <= engines, out.stdout
    aer_ratios = [float(row[-1]) for row in rows if row[-5] == "qiskit-aer"]
    assert aer_ratios and all(r == 1.0 for r in aer_ratios)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_benchmark_refuses_without_a_gpu_and_runs_its_checks_when_allowed(tmp_path: Path):
    script = str(ROOT / "benchmarks" / "jax_gpu.py")
    refused = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert refused.returncode == 2 and "no GPU" in refused.stderr
    report = tmp_path / "gpu.json"
    args = ["--allow-cpu", "--check-qubits", "6", "--qubits", "8", "--sweeps", "6x8"]
    out = subprocess.run(
        [sys.executable, script, *args, "--repeats", "1", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(report.read_text())
    checks = {(c["check"], c["engine"]): c["value"] for c in data["checks"]}
    assert abs(checks[("1 - fidelity n=6", "jax-gpu")]) < 1e-12
    assert abs(checks[("1 - fidelity n=6", "jax-gpu-c64")]) < 1e-5
    assert checks[("sweep 12q x256 max |<H> - Aer|", "jax-gpu")] < 1e-10
    cases = {(r["case"], r["engine"]) for r in data["rows"]}
    for engine in ("qiskit-aer", "jax-gpu", "jax-gpu-c64"):
        assert ("statevector n=8", engine) in cases and ("sweep 6q x8", engine) in cases


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compile_cache_benchmark_prints_a_row_per_width():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "jax_compile_cache.py"), "--qubits", "3", "4"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln.split() for ln in out.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["3", "4"]
    assert all(len(row) == 5 and all(float(x) > 0 for x in row[1:]) for row in rows)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_routing_benchmark_quick_run_prints_both_totals_and_the_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "routing.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    best = next(ln for ln in lines if ln.startswith("best engine per circuit in hindsight:"))
    auto = next(ln for ln in lines if ln.startswith("auto (cost model argmin), as run:"))
    ratio = next(ln for ln in lines if ln.startswith("ratio auto / best:"))
    best_s, auto_s = float(best.split()[-2]), float(auto.split()[-2])
    # Auto's total can never beat the best choice per circuit measured in the same run.
    assert 0 < best_s <= auto_s
    assert float(ratio.split()[4]) == pytest.approx(auto_s / best_s, rel=0.01)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_flood_benchmark_measures_canaries_idle_and_under_a_flood():
    lines = _lines_of("flood.py", "--flood", "500", "--canaries", "5", timeout=230)
    assert lines["idle"].startswith("idle:  5 canaries")
    assert "p99" in lines["flood"] and "ratio flood / idle" in lines


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fairness_benchmark_routes_the_heavy_job_apart_and_completes_every_shot():
    # Its figures are for a person; what can fail here: the heavy job took the heavy
    # lane in shot chunks, and each run of it ended with all its shots.
    short = ["--seconds", "3", "--idle-seconds", "2", "--rate", "5"]
    small_lanes = ["--heavy-seconds", "1", "--chunk-seconds", "1"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fairness.py"), *short, *small_lanes],
        capture_output=True,
        text=True,
        timeout=290,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln.strip() for ln in out.stdout.splitlines()]
    (routing,) = [ln for ln in lines if ln.startswith("routing:")]
    assert routing.startswith("routing: lane heavy, ") and " 1 chunk(s)" not in routing
    (heavy,) = [ln for ln in lines if ln.startswith("heavy job:")]
    shots = int(heavy.split(" shots;")[0].rsplit(" ", 1)[-1])
    (counts,) = [ln for ln in lines if ln.startswith("counts ")]
    assert counts.startswith(f"counts {shots} / {shots} of {shots} shots")
    assert any(ln.startswith("ratio busy / idle:") for ln in lines)


@pytest.mark.timeout(120)
def test_publish_acks_benchmark_compares_both_ways_in_one_run():
    lines = _lines_of("publish_acks.py", "--messages", "300", "--repeats", "1", timeout=110)
    js_us = float(lines["js.publish"].split()[1])
    acks_us = float(lines["PubAcks"].split()[1])
    ratio = float(lines["ratio PubAcks / js.publish"].split()[-1])
    assert js_us > 0 and acks_us > 0
    assert ratio == pytest.approx(acks_us / js_us, abs=0.01)


def _lines_of(script: str, *args: str, timeout: float) -> dict[str, str]:
    """Run ``benchmarks/<script>``; its output lines keyed by the text before their colon."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {ln.split(":")[0]: ln for ln in out.stdout.splitlines()}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gateway_benchmark_delivers_every_final_event_to_every_subscriber():
    lines = _lines_of(
        "gateway.py",
        "--jobs",
        "10",
        "--warmup",
        "3",
        "--subscribers",
        "20",
        "--fanout-jobs",
        "40",
        timeout=230,
    )
    # Counts, never timings: every stream got every job's final event, once.
    assert lines["delivered"] == "delivered: 800 of 800"
    assert lines["missed"] == "missed: 0" and lines["duplicates"] == "duplicates: 0"
    assert lines["latency jobs"].startswith("latency jobs: 10 per way")
    assert float(lines["gateway p50 ms"].split()[-1]) > 0
    assert float(lines["nats-py p50 ms"].split()[-1]) > 0
