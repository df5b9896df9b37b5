"""The ``sweep`` method: one parametrised circuit, many parameter sets, one job.

Every installed engine runs sweeps through the bus (real nats-server, every stage) and
agrees with the exact reference; a sweep equals its points run as separate jobs with
the points' seeds; bad sweeps are rejected with ``invalid_sweep``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from qbus.bus.config import Config, Limits
from qbus.bus.connection import Bus
from qbus.client import Client
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.verify import VerifyHandler
from qbus.engines import reference
from qbus.engines.base import RunRequest
from qbus.engines.observables import expectation_values
from qbus.engines.registry import available_engines, get_engine
from qbus.engines.sweep import (
    check_sweep,
    expectation_matrix,
    point_seed,
    slot_table,
    without_measurements,
)
from qbus.errors import CircuitError, EngineError
from qbus.frontends.parameters import bind
from qbus.schemas.events import (
    ExecutionCompleted,
    JobCompleted,
    JobFailed,
    JobOptions,
    JobRejected,
    Observable,
)
from qbus.schemas.ir import Circuit
from qbus.schemas.sweep import SweepPoint
from qbus.verifier.hashing import event_result_hash, result_hash
from qbus.verifier.sweep import checked_points

pytestmark = pytest.mark.timeout(300)

# The engines qbus ships (a test may have installed a plugin engine of its own).
SHIPPED = (
    "braket",
    "cirq",
    "jax",
    "pennylane",
    "qiskit-aer",
    "qsim",
    "quest",
    "qutip",
    "reference",
)
ENGINES = tuple(e for e in available_engines() if e in SHIPPED)
# Braket's local simulator draws from an unseeded generator (docs/engines.md): its
# counts cannot equal a separate run's, only follow the same distribution.
SEEDED = tuple(e for e in ENGINES if e != "braket")

# Two named angles, one of them inside an expression, and a fixed one.
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi;
qubit[3] q;
bit[3] c;
ry(theta) q[0];
cx q[0], q[1];
rx(2*phi) q[1];
rz(0.3) q[2];
h q[2];
cry(theta - phi) q[1], q[2];
c = measure q;
"""
# Without a controlled rotation: qiskit-aer binds this one's parameters in one call.
PROGRAM_RZZ = PROGRAM.replace("cry(theta - phi) q[1], q[2];", "rzz(theta - phi) q[1], q[2];")
POINTS = [{"theta": 0.2, "phi": 0.1}, {"theta": 1.3}, {"theta": 2.9, "phi": -0.7}]
FIXED = {"phi": 0.5}
OBSERVABLES = msgspec.convert(
    [
        {"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}, {"coeff": 0.5, "pauli": "X2"}]},
        {"terms": [{"coeff": 1.0, "pauli": "Y1 Y2"}, {"coeff": -0.25, "pauli": ""}]},
    ],
    list[Observable],
)


def _circuit(program: str = PROGRAM) -> Circuit:
    from qbus.frontends.qasm import parse_qasm

    circuit, _ = parse_qasm(program)
    return circuit


def _exact_expectations(circuit: Circuit, values: dict[str, float]) -> list[float]:
    state = reference.statevector(bind(without_measurements(circuit), values))
    return expectation_values(state, OBSERVABLES)


def _job(**fields: object):
    from tests.jobs import job

    return job(PROGRAM, **fields)


# -------------------------------------------------------------------- engine level


def test_check_sweep_names_the_bad_point():
    circuit = _circuit()
    check_sweep(circuit, FIXED, POINTS)
    cases = [
        ([], "$.sweep", "at least one"),
        ([{"theta": 1.0}, {"theta": 1.0, "gamma": 2.0}], "$.sweep[1]", "gamma"),
        ([{"phi": 1.0}], "$.sweep[0]", "theta"),
    ]
    for sweep, where, word in cases:
        with pytest.raises(CircuitError) as info:
            check_sweep(circuit, FIXED, sweep)
        assert info.value.code == "invalid_sweep"
        assert info.value.where == where and word in info.value.message
    with pytest.raises(CircuitError) as info:
        check_sweep(circuit, FIXED, POINTS, max_points=2)
    assert info.value.code == "invalid_sweep" and "limit is 2" in info.value.message


def test_slot_table_evaluates_names_expressions_and_numbers():
    circuit = _circuit()
    sets = [{**FIXED, **p} for p in POINTS]
    table = slot_table(circuit, sets)
    # Slots in op order: ry(theta), rx(2*phi), rz(0.3), cry(theta - phi).
    for row, values in zip(table, sets, strict=True):
        theta, phi = values["theta"], values["phi"]
        assert row.tolist() == pytest.approx([theta, 2 * phi, 0.3, theta - phi])


def test_expectation_matrix_equals_one_state_at_a_time():
    rng = np.random.default_rng(3)
    states = rng.normal(size=(5, 8)) + 1j * rng.normal(size=(5, 8))
    states /= np.linalg.norm(states, axis=1, keepdims=True)
    got = expectation_matrix(states, OBSERVABLES)
    want = [expectation_values(s, OBSERVABLES) for s in states]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_point_seeds_are_distinct_and_stay_in_range():
    seeds = [point_seed(2**63 - 5, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert point_seed(7, 0) == 7


@pytest.mark.parametrize("engine_name", ENGINES)
def test_engine_validates_sweeps_before_running(engine_name: str):
    engine = get_engine(engine_name)
    circuit = _circuit()
    bad = RunRequest(circuit=circuit, method="sweep", parameters=FIXED, sweep=[{"phi": 1.0}])
    with pytest.raises(CircuitError) as info:
        engine.run(bad)
    assert info.value.code == "invalid_sweep"
    no_shots = RunRequest(circuit=circuit, method="sweep", sweep=POINTS, parameters=FIXED, shots=0)
    with pytest.raises(EngineError) as err:
        engine.run(no_shots)
    assert err.value.code == "invalid_shots"


@pytest.mark.parametrize("program", [PROGRAM, PROGRAM_RZZ], ids=["cry", "rzz"])
@pytest.mark.parametrize("engine_name", ENGINES)
def test_engine_sweep_matches_the_reference_and_single_runs(engine_name: str, program: str):
    engine = get_engine(engine_name)
    circuit = _circuit(program)
    request = RunRequest(
        circuit=circuit,
        method="sweep",
        parameters=FIXED,
        sweep=POINTS,
        observables=OBSERVABLES,
        seed=11,
    )
    result = engine.run(request)
    assert result.sweep_results is not None and len(result.sweep_results) == len(POINTS)
    for point, values in zip(result.sweep_results, POINTS, strict=True):
        exact = _exact_expectations(circuit, {**FIXED, **values})
        assert point.counts is None
        assert point.expectations == pytest.approx(exact, abs=1e-6)
    counts = engine.run(msgspec.structs.replace(request, observables=[], shots=400))
    assert counts.sweep_results is not None
    for i, (point, values) in enumerate(zip(counts.sweep_results, POINTS, strict=True)):
        assert sum(point.counts.values()) == 400
        if engine_name in SEEDED:
            single = engine.run(
                RunRequest(
                    circuit=circuit,
                    shots=400,
                    seed=point_seed(11, i),
                    parameters={**FIXED, **values},
                )
            )
            assert point.counts == single.counts, i


# ---------------------------------------------------------------------- the bus


async def test_every_engine_sweeps_through_the_bus(config: Config, bus: Bus):
    from tests.jobs import run_jobs

    circuit = _circuit()
    jobs = []
    async with Pipeline(config, engines=ENGINES) as pipeline:
        for engine in ENGINES:
            common = dict(engine=engine, method="sweep", parameters=FIXED, sweep=POINTS)
            jobs.append(_job(job_id=f"{engine}-counts", shots=500, seed=21, **common))
            jobs.append(_job(job_id=f"{engine}-exp", observables=OBSERVABLES, **common))
            # The same points as jobs of their own, with the seeds the sweep gives them.
            for i, values in enumerate(POINTS):
                jobs.append(
                    _job(
                        job_id=f"{engine}-point{i}",
                        engine=engine,
                        shots=500,
                        seed=point_seed(21, i),
                        parameters={**FIXED, **values},
                    )
                )
        finals = await run_jobs(bus, jobs, timeout=240)
        pipeline.check()
    by_id = {f.job_id: f for f in finals}
    for submitted, final in zip(jobs, finals, strict=True):
        assert isinstance(final, JobCompleted), (submitted.job_id, final)
        assert final.engine == submitted.engine
        assert final.verification.verdict == "pass", (final.job_id, final.verification)
        assert final.result_hash == event_result_hash(final)
    for engine in ENGINES:
        counts = by_id[f"{engine}-counts"]
        assert counts.method == "sweep" and counts.verification.test == "sweep-chi2"
        assert "all 3 points" in counts.verification.detail
        assert [sum(p.counts.values()) for p in counts.sweep_results] == [500] * 3
        if engine in SEEDED:
            singles = [by_id[f"{engine}-point{i}"].counts for i in range(len(POINTS))]
            assert [p.counts for p in counts.sweep_results] == singles, engine
        exp = by_id[f"{engine}-exp"]
        assert exp.verification.test == "sweep-expectation"
        for point, values in zip(exp.sweep_results, POINTS, strict=True):
            exact = _exact_expectations(circuit, {**FIXED, **values})
            assert point.expectations == pytest.approx(exact, abs=1e-6), engine


async def test_bad_sweeps_are_rejected_at_ingest(config: Config, bus: Bus):
    from tests.jobs import run_jobs

    config = msgspec.structs.replace(config, limits=Limits(max_sweep_points=3))
    cases = {
        "empty": dict(method="sweep", sweep=[], parameters=FIXED),
        "unknown": dict(method="sweep", sweep=[{"theta": 1.0, "gamma": 0.1}], parameters=FIXED),
        "unbound": dict(method="sweep", sweep=[{"theta": 1.0, "phi": 0.1}, {"phi": 0.2}]),
        "too-many": dict(method="sweep", sweep=[{"theta": 0.1}] * 4, parameters=FIXED),
        "not-a-sweep": dict(method="sample", sweep=POINTS, parameters=FIXED),
    }
    async with Pipeline(config) as pipeline:
        jobs = [_job(job_id=f"bad-{name}", **fields) for name, fields in cases.items()]
        # One the limit allows, so the limit is the reason for the rejection above.
        jobs.append(_job(job_id="ok", method="sweep", sweep=[{"theta": 0.1}] * 3, parameters=FIXED))
        finals = await run_jobs(bus, jobs, timeout=120)
        pipeline.check()
    rejected = {f.job_id: f for f in finals if isinstance(f, JobRejected)}
    assert set(rejected) == {f"bad-{name}" for name in cases}
    assert all(r.code == "invalid_sweep" and r.stage == "ingest" for r in rejected.values())
    unknown, unbound = rejected["bad-unknown"], rejected["bad-unbound"]
    assert unknown.where == "$.sweep[0]" and "gamma" in unknown.message
    assert unbound.where == "$.sweep[1]" and "theta" in unbound.message
    assert "limit is 3" in rejected["bad-too-many"].message
    ok = next(f for f in finals if f.job_id == "ok")
    assert isinstance(ok, JobCompleted) and len(ok.sweep_results) == 3


async def test_cli_and_client_submit_sweeps(config: Config, bus: Bus, tmp_path: Path):
    program = tmp_path / "circuit.qasm"
    program.write_text(PROGRAM)
    points = tmp_path / "points.json"
    points.write_text(json.dumps(POINTS))
    async with Pipeline(config):
        async with Client(config.bus.url) as client:
            handle = await client.submit(PROGRAM, method="sweep", sweep=POINTS, parameters=FIXED)
            final = await handle.result(timeout=120)
        assert isinstance(final, JobCompleted) and len(final.sweep_results) == 3
        cmd = [sys.executable, "-m", "qbus", "--url", config.bus.url, "submit", str(program)]
        cmd += ["--sweep", str(points), "--param", "phi=0.5", "--shots", "200", "--wait"]
        out = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "sweep: 3 points" in out.stdout and "verification: PASS (sweep-chi2)" in out.stdout


async def test_cli_submits_expectation_jobs_and_observable_sweeps_in_chunks(
    config: Config, bus: Bus, tmp_path: Path
):
    program = tmp_path / "circuit.qasm"
    program.write_text(PROGRAM)
    points = tmp_path / "points.json"
    points.write_text(json.dumps(POINTS))
    observables = tmp_path / "observables.json"
    observables.write_text(msgspec.json.encode(OBSERVABLES).decode())
    base = [sys.executable, "-m", "qbus", "--url", config.bus.url, "submit", str(program)]
    single = [*base, "--observable", "Z0 Z1 + 0.5 X2", "--observable", "Y1 Y2 - 0.25"]
    single += ["--param", "theta=0.2", "--param", "phi=0.1", "--wait"]
    sweep = [*base, "--sweep", str(points), "--observables", str(observables)]
    sweep += ["--param", "phi=0.5", "--chunk-size", "2", "--wait"]
    async with Pipeline(config):
        outs = [
            await asyncio.to_thread(
                subprocess.run, cmd, capture_output=True, text=True, timeout=120
            )
            for cmd in (single, sweep)
        ]
    for out in outs:
        assert out.returncode == 0, out.stderr + out.stdout
    # The two --observable texts are OBSERVABLES, written as a person would.
    exact = _exact_expectations(_circuit(), {"theta": 0.2, "phi": 0.1})
    printed = [
        float(line.split(":")[1])
        for line in outs[0].stdout.splitlines()
        if line.startswith("observable ")
    ]
    assert printed == pytest.approx(exact, abs=1e-6)
    assert "verification: PASS" in outs[0].stdout
    assert "sweep: 3 points" in outs[1].stdout and "<O> = [" in outs[1].stdout
    assert "verification: PASS" in outs[1].stdout


def test_observable_text_parses_like_the_protocol_and_explains_mistakes(tmp_path: Path):
    from qbus.producers.open_options import observable_from_text, observables_from_file

    parsed = observable_from_text("Z0 Z1 + 0.5 X2 - 0.25")
    assert [(t.coeff, t.pauli) for t in parsed.terms] == [
        (1.0, "Z0 Z1"),
        (0.5, "X2"),
        (-0.25, ""),
    ]
    for bad, says in [("Z0 +", "empty term"), ("Q1", "bad Pauli factor"), ("Z0 Z0", "twice")]:
        with pytest.raises(ValueError, match=says):
            observable_from_text(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('[{"terms": [{"coeff": "one", "pauli": "Z0"}]}]')
    with pytest.raises(ValueError, match="expected a JSON list of observables"):
        observables_from_file(wrong)


# ------------------------------------------------------------------ verification


def _completed(points: list[SweepPoint], **options: object) -> ExecutionCompleted:
    circuit = _circuit()
    opts = JobOptions(method="sweep", parameters=FIXED, sweep=POINTS, shots=2000, **options)
    return ExecutionCompleted(
        event_id="e1",
        job_id="forged",
        engine="reference",
        engine_version="0",
        circuit=circuit,
        circuit_hash="sha256:x",
        options=opts,
        seed=1,
        sweep_results=points,
    )


async def test_verify_fails_a_sweep_with_a_wrong_point():
    engine = get_engine("reference")
    circuit = _circuit()
    request = RunRequest(
        circuit=circuit, method="sweep", parameters=FIXED, sweep=POINTS, shots=2000
    )
    good = engine.run(request).sweep_results
    handler = VerifyHandler()
    (ok,) = await handler.handle(_completed(good))
    assert isinstance(ok, JobCompleted), ok
    swapped = [good[0], good[2], good[1]]
    (bad,) = await handler.handle(_completed(swapped))
    assert isinstance(bad, JobFailed) and bad.code == "verification_failed"
    assert "point 1" in bad.message and "Bonferroni" in bad.message
    exp = engine.run(msgspec.structs.replace(request, observables=OBSERVABLES)).sweep_results
    nudged = [exp[0], SweepPoint(expectations=[exp[1].expectations[0] + 1e-3, 0.0]), exp[2]]
    (bad,) = await handler.handle(_completed(nudged, observables=OBSERVABLES))
    assert isinstance(bad, JobFailed) and "point 1" in bad.message
    (short,) = await handler.handle(_completed(good[:2]))
    assert isinstance(short, JobFailed) and "2 results for 3 sweep points" in short.message


def test_large_sweeps_check_a_sample_seeded_by_the_job():
    first = checked_points(10_000, "job-a", limit=64)
    assert first == checked_points(10_000, "job-a", limit=64)
    assert first != checked_points(10_000, "job-b", limit=64)
    assert len(set(first)) == 64 and all(0 <= i < 10_000 for i in first)
    assert checked_points(5, "job-a", limit=64) == [0, 1, 2, 3, 4]


def test_sweep_results_enter_the_result_hash_only_when_present():
    base = dict(
        circuit_hash="sha256:x",
        engine="e",
        engine_version="1",
        method="sweep",
        shots=1,
        seed=1,
    )
    assert result_hash(**base) == result_hash(**base, sweep_results=None)
    one = [SweepPoint(counts={"0": 1})]
    other = [SweepPoint(counts={"1": 1})]
    assert result_hash(**base, sweep_results=one) != result_hash(**base)
    assert result_hash(**base, sweep_results=one) != result_hash(**base, sweep_results=other)
