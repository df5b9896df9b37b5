"""Routing on a real nats-server with every stage: capability filter, cost model, priorities."""

from __future__ import annotations

import asyncio

import pytest

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.route import RouteHandler, job_features
from qbus.errors import Reject
from qbus.router.capability import capability_filter, state_bytes
from qbus.router.cost import CostModel, features, fit
from qbus.router.policy import describe, rank
from qbus.schemas.events import (
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    JobRejected,
    decode,
)
from qbus.schemas.ir import Circuit, CircuitStats, Op
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(180)


def _ghz(n: int, measure: bool = True) -> str:
    src = f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{n}] q;\nbit[{n}] c;\nh q[0];\n'
    src += "".join(f"cx q[{i}], q[{i + 1}];\n" for i in range(n - 1))
    return src + ("c = measure q;\n" if measure else "")


async def _events(bus: Bus, subject: str) -> list[tuple[int, Event]]:
    """(stream sequence, event) of every stored message on ``subject``."""
    sub = await bus.js.subscribe(subject, stream=bus.config.stream, ordered_consumer=True)
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    out = []
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=10)
            out.append((msg.metadata.sequence.stream, decode(msg.data)))
    finally:
        await sub.unsubscribe()
    return out


async def _requested(bus: Bus, job_id: str) -> ExecutionRequested:
    ((_, event),) = await _events(bus, f"{bus.subjects.prefix}.exec.*.{job_id}")
    assert isinstance(event, ExecutionRequested)
    return event


# ----------------------------------------------------------------- capability filter


def test_capability_filter_says_why_each_engine_is_out():
    wide = Circuit(num_qubits=21, ops=(Op(name="h", qubits=(0,)),))
    fit_ = capability_filter(
        ["reference", "qutip", "qiskit-aer"], wide, JobOptions(method="statevector"), 32_768
    )
    assert fit_.capable == ["qiskit-aer"]
    assert set(fit_.excluded) == {"reference", "qutip"}
    assert "too_many_qubits" in fit_.excluded["reference"]
    # Memory: a 21-qubit state needs 64 MiB with its work copy; a 16 MiB cap excludes it.
    assert state_bytes(21, noisy=False) == 16 * 2**21 * 2
    capped = capability_filter(["qiskit-aer"], wide, JobOptions(method="statevector"), 16)
    assert capped.capable == [] and "over the 16 MiB limit" in capped.excluded["qiskit-aer"]
    dynamics = capability_filter(
        ["qiskit-aer"], wide, JobOptions(method="dynamics"), 32_768
    ).excluded
    assert "unsupported_method" in dynamics["qiskit-aer"] or "dynamics" in dynamics["qiskit-aer"]


async def test_no_capable_engine_is_rejected_with_every_reason(bus: Bus, config):
    async with Pipeline(config, engines=("reference", "qutip")) as pipeline:
        (final,) = await run_jobs(bus, [job(_ghz(21, measure=False), method="statevector")])
        (ok,) = await run_jobs(bus, [job(QASM2_BELL, shots=200)])
        pipeline.check()
    assert isinstance(final, JobRejected), final
    assert final.code == "no_capable_engine" and final.stage == "route"
    assert "reference: too_many_qubits" in final.message
    assert "qutip: too_many_qubits" in final.message
    assert "21 qubits" in final.message
    # The same bus still routes what fits.
    assert isinstance(ok, JobCompleted) and ok.engine in ("reference", "qutip")


# ----------------------------------------------------------------------- cost model


def test_fit_recovers_known_coefficients():
    truth = [-8.0, 0.6, 0.9, 0.3]  # log-seconds: overhead, per qubit, per log-op, per log-shot
    rows = []
    for n in (2, 6, 10, 14):
        for ops in (10, 100, 1000):
            for shots in (100, 10_000):
                f = features(
                    Circuit(num_qubits=n, ops=tuple(Op(name="h", qubits=(0,)) for _ in range(ops))),
                    "sample",
                    shots,
                )
                log_s = sum(c * x for c, x in zip(truth, f.vector(), strict=True))
                rows.append((f, __import__("math").exp(log_s)))
    coeffs = fit(rows)
    assert coeffs == pytest.approx(truth, abs=1e-6)
    model = CostModel({"e": {"sample": coeffs}})
    for f, seconds in rows:
        assert model.predict("e", f) == pytest.approx(seconds, rel=1e-6)
    # Shots do not count for a state vector; a sweep costs one run per point.
    sv = features(Circuit(num_qubits=3, ops=()), "statevector", 10_000)
    assert sv.vector()[3] == 0.0
    sweep = features(Circuit(num_qubits=3, ops=()), "sample", 100, sweep_points=5)
    one = features(Circuit(num_qubits=3, ops=()), "sample", 100)
    assert model.predict("e", sweep) == pytest.approx(5 * model.predict("e", one))


def test_rank_adds_queue_wait_and_describes_runners_up():
    ranked = rank(["a", "b", "c"], {"a": 0.010, "b": 0.002, "c": 0.003}.get, lambda e: 0.0)
    assert [r.engine for r in ranked] == ["b", "c", "a"]
    loaded = rank(["a", "b"], {"a": 0.010, "b": 0.002}.get, {"a": 0.0, "b": 0.05}.get)
    assert loaded[0].engine == "a"  # b's queue costs more than a's slower run
    text = describe(ranked)
    assert text.startswith("auto: cheapest predicted: b 2 ms")
    assert "runners-up: c 3 ms, a 10 ms" in text


async def _settled(model: CostModel, observed: int) -> None:
    """Wait until the feedback consumer has read ``observed`` runs in all."""
    for _ in range(400):
        if sum(model.observations.values()) >= observed:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the route stage saw {model.observations}, expected {observed} runs")


async def test_auto_picks_the_models_argmin_and_carries_the_prediction(bus: Bus, config):
    engines = ("qiskit-aer", "qsim", "reference")
    shapes = [(_ghz(3), "sample", 100), (_ghz(12), "sample", 20_000), (_ghz(18), "sample", 10)]
    shapes.append((_ghz(10, measure=False), "statevector", 1024))
    async with Pipeline(config, engines=engines) as pipeline:
        model: CostModel = pipeline.stages["route"].model
        for i, (src, method, shots) in enumerate(shapes):
            # One at a time on an idle bus: no queue term, and the model as it stands now
            # (it learns from every run) is the one the router uses.
            await _settled(model, i)
            j = job(src, method=method, shots=shots)
            corrections = dict(model.correction)
            (final,) = await run_jobs(bus, [j])
            assert isinstance(final, JobCompleted), final
            request = await _requested(bus, j.job_id)
            feats = job_features(request.circuit, request.options)
            frozen = CostModel(model.coefficients)
            frozen.correction = corrections
            predictions = {e: frozen.predict(e, feats) for e in engines}
            best = min(predictions, key=lambda e: (predictions[e], e))
            assert request.engine == best == final.engine, (predictions, request.route_reason)
            assert request.predicted_seconds == pytest.approx(predictions[best])
            assert request.route_reason.startswith(f"auto: cheapest predicted: {best} ")
            assert "runners-up" in request.route_reason
        pipeline.check()


async def test_observed_runs_move_the_prediction(bus: Bus, config):
    async with Pipeline(config, engines=("qiskit-aer",)) as pipeline:
        stage = pipeline.stages["route"]
        model: CostModel = stage.model
        probe = features(Circuit(num_qubits=3, ops=(Op(name="h", qubits=(0,)),)), "sample", 100)
        before = model.predict("qiskit-aer", probe)
        finals = await run_jobs(bus, [job(_ghz(n), shots=100) for n in (3, 4, 5)])
        assert all(isinstance(f, JobCompleted) for f in finals)
        # The feedback consumer reads the ExecutionCompleted events a moment later.
        for _ in range(200):
            if model.observations.get("qiskit-aer", 0) >= 3:
                break
            await asyncio.sleep(0.05)
        pipeline.check()
    assert model.observations["qiskit-aer"] == 3
    after = model.predict("qiskit-aer", probe)
    assert after != before
    assert after == pytest.approx(before * __import__("math").exp(model.correction["qiskit-aer"]))
    # Each observation is counted once: a redelivered event changes nothing.
    runs = [e for _, e in await _events(bus, bus.subjects.executed())]
    run = next(e for e in runs if isinstance(e, ExecutionCompleted))
    assert not model.observe(run.engine, job_features(run.circuit, run.options), 1.0, run.event_id)


async def test_named_engine_keeps_its_own_checks():
    stats = CircuitStats(gates=1, two_qubit_gates=0, depth=1)
    event = CircuitRewritten(
        event_id="e1",
        job_id="j1",
        circuit=Circuit(num_qubits=1, num_clbits=1, ops=(Op(name="h", qubits=(0,)),)),
        circuit_hash="sha256:x",
        original_hash="sha256:x",
        options=JobOptions(engine="no-such-engine"),
        before=stats,
        after=stats,
    )
    with pytest.raises(Reject) as err:
        await RouteHandler().handle(event)
    assert err.value.code == "unknown_engine"
    # An unknown priority never reaches the router: it fails the decode at ingest
    # (tests/test_rejections.py, invalid_priority).


# ----------------------------------------------------------------------- priorities


def _busy_qasm(n: int = 21, layers: int = 30) -> str:
    src = f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{n}] q;\nbit[{n}] c;\n'
    for layer in range(layers):
        src += "".join(f"rx({0.1 + layer * 0.01}) q[{i}];\n" for i in range(n))
        src += "".join(f"cx q[{i}], q[{i + 1}];\n" for i in range(layer % 2, n - 1, 2))
    return src + "c = measure q;\n"


async def test_high_priority_jobs_overtake_queued_low_ones(bus: Bus, config):
    async with Pipeline(config, engines=("qiskit-aer",)) as pipeline:
        # Seconds of work in a sandbox worker process (this process's event loop, which
        # runs every stage, stays free); 21 qubits is above the verifier's exact limit.
        busy = job(
            _busy_qasm(), shots=10, engine="qiskit-aer", optimize=False, hypervisor="process"
        )
        await bus.publish(busy)
        # Queue behind the running job: low ones first, then high ones.
        for _ in range(200):
            if await _events(bus, bus.subjects.exec("qiskit-aer", busy.job_id)):
                break
            await asyncio.sleep(0.02)
        lows = [job(QASM2_BELL, shots=100, priority="low") for _ in range(4)]
        highs = [job(QASM2_BELL, shots=100, priority="high") for _ in range(4)]
        finals = await run_jobs(bus, [*lows, *highs], timeout=120)
        pipeline.check()
    assert all(isinstance(f, JobCompleted) for f in finals), finals
    req_seqs = []
    for j in [*lows, *highs]:
        ((seq, request),) = await _events(bus, f"{bus.subjects.prefix}.exec.*.*.{j.job_id}")
        assert request.options.priority == j.priority
        req_seqs.append(seq)
    # The subject carries the priority; normal jobs keep the four-token subject.
    assert await _events(bus, bus.subjects.exec("qiskit-aer", highs[0].job_id, "high"))
    ((busy_done, _),) = await _events(bus, bus.subjects.executed(busy.job_id))
    assert busy_done > max(req_seqs), "the busy job ended before the queue was built"
    done = {}
    for j in [*lows, *highs]:
        ((seq, _),) = await _events(bus, bus.subjects.executed(j.job_id))
        done[j.job_id] = seq
    assert max(done[j.job_id] for j in highs) < min(done[j.job_id] for j in lows)
