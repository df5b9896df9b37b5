"""Heavy jobs never hold up light ones: shot-by-shot cost, the heavy lane, its executor slots.

The bus tests run every stage on a real nats-server with one executor copy of Qiskit Aer.
A job whose circuit must be simulated shot by shot (mid-circuit measurements, resets,
``if``) and takes seconds is predicted heavy; Bell jobs submitted while it runs finish
before it with the heavy lane on, and after it with the lane off. Orderings, not timings.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import ChunksConfig, Config, LanesConfig, read_config
from qbus.bus.connection import Bus
from qbus.bus.subjects import Subjects
from qbus.cli.jobs import duration, prediction_line
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.route import RouteHandler, job_features
from qbus.errors import ConfigError
from qbus.frontends.program import parse_program
from qbus.hypervisor.process import ProcessSandbox
from qbus.producers.submit import wait_final
from qbus.router.cost import SHOT_BY_SHOT, CostModel, features
from qbus.schemas.events import (
    CircuitRewritten,
    Event,
    ExecutionRequested,
    JobCompleted,
    JobOptions,
    decode,
)
from qbus.schemas.ir import CircuitStats
from qbus.supervisor import Supervisor
from tests.conftest import config_toml
from tests.jobs import QASM2_BELL, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(240)

ENGINE = "qiskit-aer"


def dynamic_qasm(qubits: int, layers: int, dynamic: bool = True) -> str:
    """Layers of ``ry`` and a ``cx`` chain; with ``dynamic``, after each layer two qubits
    are measured, their neighbour flipped on the outcome (``if``) and reset."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for layer in range(layers):
        lines += [f"ry({0.1 + layer * 0.37 + i * 0.01:.3f}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in range(qubits - 1)]
        if dynamic:
            for q in (layer % qubits, (layer + 7) % qubits):
                t = (q + 1) % qubits
                lines += [
                    f"c[{q}] = measure q[{q}];",
                    f"if (c[{q}] == 1) {{ x q[{t}]; }}",
                    f"reset q[{q}];",
                ]
    lines.append("c = measure q;")
    return "\n".join(lines) + "\n"


def circuit_of(source: str):
    return parse_program(source)[0]


# -------------------------------------------------------------------- the cost model


def test_shot_by_shot_features_and_prediction_scale_with_shots():
    model = CostModel.load_defaults()
    dynamic, static = circuit_of(dynamic_qasm(12, 4)), circuit_of(dynamic_qasm(12, 4, False))
    f_dyn, f_static = features(dynamic, "sample", 100), features(static, "sample", 100)
    assert f_dyn.shot_by_shot and f_dyn.per_shot and not f_static.shot_by_shot
    # Measure, if (with its body op counted once) and reset: 4 ops per dynamic qubit.
    assert f_dyn.ops - f_static.ops == 4 * 2 * 4
    # The calibration machine measured Aer's per-shot runs: the row ships with its meta.
    assert SHOT_BY_SHOT in model.coefficients[ENGINE]
    assert SHOT_BY_SHOT in model.meta and model.meta[SHOT_BY_SHOT]["date"]
    aer_shots = model.coefficients[ENGINE][SHOT_BY_SHOT][3]
    assert 0.7 < aer_shots < 1.2, "a shot-by-shot run costs about shots × one evolution"

    def predict(engine: str, circuit, shots: int) -> float:
        return model.predict(engine, features(circuit, "sample", shots))

    for engine in (ENGINE, "cirq", "reference"):
        # Ten times the shots: about ten times the time (a sampled job: far less).
        ratio = predict(engine, dynamic, 1000) / predict(engine, dynamic, 100)
        assert ratio > 5, (engine, ratio)
        assert ratio > 2 * predict(engine, static, 1000) / predict(engine, static, 100)
        # At 1000 shots one state and a sampling pass is far cheaper than 1000 runs.
        assert predict(engine, dynamic, 1000) > 10 * predict(engine, static, 1000)
    # An engine without a shot_by_shot row: exactly shots × one state-vector run.
    row_less = features(dynamic, "sample", 250)
    one = model.predict("cirq", features(dynamic, "statevector", 1))
    assert model.predict("cirq", row_less) == pytest.approx(250 * one, rel=1e-9)
    # A state-vector job of the same circuit is one run: its shots do not count.
    assert not features(dynamic, "statevector", 1000).per_shot


def _rewritten(source: str, shots: int, **options) -> CircuitRewritten:
    stats = CircuitStats(gates=1, two_qubit_gates=0, depth=1)
    circuit = circuit_of(source)
    return CircuitRewritten(
        event_id=f"e-{shots}",
        job_id=f"j-{shots}",
        circuit=circuit,
        circuit_hash="sha256:x",
        original_hash="sha256:x",
        options=JobOptions(engine=ENGINE, shots=shots, **options),
        before=stats,
        after=stats,
    )


async def test_router_sets_the_lane_from_the_whole_jobs_prediction():
    model = CostModel.load_defaults()
    heavy = _rewritten(dynamic_qasm(14, 4), 2000)
    predicted = model.predict(ENGINE, job_features(heavy.circuit, heavy.options))
    assert predicted > 2 * ChunksConfig().shot_seconds  # long enough to be cut in shots
    handler = RouteHandler(model=model, lanes=LanesConfig(heavy_seconds=predicted / 2))
    requests = await handler.handle(heavy)
    # Shot chunks (qbus/router/chunks.py), each with its share of the job's prediction,
    # all in the heavy lane: the whole job's prediction decided.
    assert len(requests) > 1 and all(isinstance(r, ExecutionRequested) for r in requests)
    assert {r.lane for r in requests} == {"heavy"}
    assert sum(r.predicted_seconds for r in requests) == pytest.approx(predicted)
    assert max(r.predicted_seconds for r in requests) < predicted / 2
    s = Subjects("t")
    assert {s.for_event(r) for r in requests} == {f"t.exec.{ENGINE}.heavy.{heavy.job_id}"}
    # Heavy ignores priority.
    high = msgspec.structs.replace(requests[0], options=JobOptions(engine=ENGINE, priority="high"))
    assert s.for_event(high) == f"t.exec.{ENGINE}.heavy.{heavy.job_id}"
    # Light jobs keep their subjects.
    (bell,) = await handler.handle(_rewritten(QASM2_BELL, 100))
    assert bell.lane == "light" and s.for_event(bell) == f"t.exec.{ENGINE}.{bell.job_id}"
    # The lane off: the same job's chunks are light.
    off = RouteHandler(model=model, lanes=LanesConfig(heavy_seconds=math.inf))
    requests = await off.handle(heavy)
    assert len(requests) > 1 and {r.lane for r in requests} == {"light"}
    assert {s.for_event(r) for r in requests} == {f"t.exec.{ENGINE}.{heavy.job_id}"}


async def test_auto_counts_the_backlog_of_the_lane_the_job_would_join():
    asked: list[tuple[str, str]] = []

    async def backlog(engine: str, lane: str) -> int:
        asked.append((engine, lane))
        return 1000 if lane == "heavy" else 0  # a long heavy queue everywhere

    async def deployed() -> set[str]:
        return {ENGINE, "cirq"}

    model = CostModel.load_defaults()
    handler = RouteHandler(
        deployed=deployed, model=model, backlog=backlog, lanes=LanesConfig(heavy_seconds=1e-9)
    )
    heavy = msgspec.structs.replace(
        _rewritten(dynamic_qasm(8, 2), 100), options=JobOptions(engine="auto", shots=100)
    )
    (request,) = await handler.handle(heavy)
    assert request.lane == "heavy" and set(asked) == {(ENGINE, "heavy"), ("cirq", "heavy")}
    # A light job asks only the light lanes' backlog: heavy messages do not delay it.
    asked.clear()
    light = RouteHandler(
        deployed=deployed, model=model, backlog=backlog, lanes=LanesConfig(heavy_seconds=1e9)
    )
    (request,) = await light.handle(heavy)
    assert request.lane == "light" and set(asked) == {(ENGINE, "light"), ("cirq", "light")}


def test_lanes_config_reads_and_refuses_nonsense(tmp_path: Path):
    path = tmp_path / "qbus.toml"
    path.write_text("[lanes]\nheavy_seconds = inf\nheavy_slots = 2\n")
    lanes = read_config(path, env={}).lanes
    assert lanes.heavy_seconds == math.inf and lanes.heavy_slots == 2 and lanes.heavy_nice == 10
    assert lanes.heavy_idle
    for bad, words in (
        ("heavy_seconds = 0", "heavy_seconds must be > 0"),
        ("heavy_slots = 0", "heavy_slots must be >= 1"),
        ("heavy_nice = 40", "heavy_nice must be between 0 and 19"),
        ("heavy_lane = 1", "heavy_lane"),
    ):
        path.write_text(f"[lanes]\n{bad}\n")
        with pytest.raises(ConfigError, match=words):
            read_config(path, env={})


def test_prediction_line_and_durations():
    assert [duration(s) for s in (4.2, 89, 150, 3 * 3600)] == ["~4 s", "~89 s", "~2 min", "~3.0 h"]
    request = ExecutionRequested(
        event_id="e",
        job_id="j",
        engine=ENGINE,
        circuit=circuit_of(dynamic_qasm(2, 1)),
        circuit_hash="sha256:x",
        options=JobOptions(),
        predicted_seconds=125.0,
        lane="heavy",
        chunks=8,
    )
    line = prediction_line(request)
    assert line == f"predicted run time ~2 min on {ENGINE} (heavy lane, 8 chunks)"
    # A shot chunk carries its share of the job's time: the line shows the whole job's.
    shot_chunk = msgspec.structs.replace(
        request, predicted_seconds=30.0, chunk=2, shot_start=200, shot_stop=300
    )
    assert prediction_line(shot_chunk) == line.replace("~2 min", "~4 min")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_heavy_sandbox_workers_run_niced():
    def niceness(pid: int) -> int:
        # /proc/<pid>/stat: field 19 is the nice value (after the parenthesised name).
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    plain, niced = ProcessSandbox(1), ProcessSandbox(1, nice=7, idle=True)
    try:
        plain.warm()
        niced.warm()
        base = niceness(plain._idle[0].proc.pid)
        heavy = niced._idle[0].proc.pid
        assert niceness(heavy) == min(base + 7, 19)
        # SCHED_IDLE: a waking light stage takes the CPU from it at once.
        assert os.sched_getscheduler(heavy) == os.SCHED_IDLE
        assert os.sched_getscheduler(plain._idle[0].proc.pid) == os.SCHED_OTHER
    finally:
        plain.close()
        niced.close()


# ---------------------------------------------------------------------- on the bus


async def _stored(bus: Bus, subject: str) -> list[tuple[int, Event]]:
    """(stream sequence, event) of every stored message on ``subject``."""
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    sub = await bus.js.subscribe(subject, stream=bus.config.stream, ordered_consumer=True)
    out = []
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=10)
            out.append((msg.metadata.sequence.stream, decode(msg.data)))
    finally:
        await sub.unsubscribe()
    return out


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# About 5-10 s of Aer on the test machine; ~1 s predicted by the shipped model.
HEAVY = dynamic_qasm(13, 3)
HEAVY_SHOTS = 400
# Below the heavy job's prediction, far above a Bell job's (asserted in the test).
HEAVY_SECONDS = 0.2


def _lanes_config(config: Config, heavy_seconds: float) -> Config:
    return msgspec.structs.replace(config, lanes=LanesConfig(heavy_seconds=heavy_seconds))


async def _heavy_then_bells(bus: Bus, config: Config, lane: str) -> tuple[int, list[int]]:
    """Run the heavy job, submit Bell jobs once an executor slot holds it; returns the
    stream sequence of its result and of theirs (``qbus.executed.<job>``)."""
    heavy = job(HEAVY, shots=HEAVY_SHOTS, engine=ENGINE, optimize=False, cache=False)
    await bus.publish(heavy)
    durable = bus.executor_durable(ENGINE, "heavy" if lane == "heavy" else "normal")

    async def running() -> bool:
        info = await bus.js.consumer_info(bus.config.stream, durable)
        return info.num_ack_pending >= 1

    await _wait_for(running, 60, f"an executor to take the heavy job ({durable})")
    bells = [job(QASM2_BELL, shots=100, engine=ENGINE, cache=False) for _ in range(4)]
    finals = await run_jobs(bus, bells, timeout=120)
    assert all(isinstance(f, JobCompleted) for f in finals), finals
    assert isinstance(await wait_final(bus, heavy.job_id, 180), JobCompleted)
    # Four tokens on the light lane, five (``heavy`` before the job id) on the heavy one.
    ((request_seq, request),) = await _stored(
        bus, f"{bus.subjects.prefix}.exec.*.*.{heavy.job_id}"
    ) + await _stored(bus, bus.subjects.exec(ENGINE, heavy.job_id))
    assert isinstance(request, ExecutionRequested) and request.lane == lane
    assert request.predicted_seconds is not None and request.predicted_seconds >= HEAVY_SECONDS
    for bell in bells:
        ((_, light),) = await _stored(bus, bus.subjects.exec(ENGINE, bell.job_id))
        assert isinstance(light, ExecutionRequested) and light.lane == "light"
    ((heavy_done, ran),) = await _stored(bus, bus.subjects.executed(heavy.job_id))
    # The heavy slot runs it in its own (niced) sandbox worker, never inline.
    assert ran.hypervisor == ("process" if lane == "heavy" else "inline")
    bells_done = []
    for bell in bells:
        ((seq, _),) = await _stored(bus, bus.subjects.executed(bell.job_id))
        bells_done.append(seq)
    assert min(bells_done) > request_seq
    return heavy_done, bells_done


async def test_light_jobs_finish_before_a_running_heavy_job(config: Config, bus: Bus):
    config = _lanes_config(config, HEAVY_SECONDS)
    model = CostModel.load_defaults()
    bell = circuit_of(QASM2_BELL)
    assert model.predict(ENGINE, features(bell, "sample", 100)) < HEAVY_SECONDS / 10
    async with Pipeline(config, engines=(ENGINE,)) as pipeline:  # one executor copy
        heavy_done, bells_done = await _heavy_then_bells(bus, config, "heavy")
        pipeline.check()
    # Every Bell job submitted while the heavy one ran finished before it.
    assert max(bells_done) < heavy_done
    # It ran for longer than ack_wait (2 s here) and was delivered once: the slot's
    # in-progress acks kept it from redelivery.
    info = await bus.js.consumer_info(bus.config.stream, bus.executor_durable(ENGINE, "heavy"))
    assert info.delivered.consumer_seq == 1


async def test_without_the_heavy_lane_light_jobs_wait_behind_it(config: Config, bus: Bus):
    config = _lanes_config(config, math.inf)  # the lane off: what the test above guards
    async with Pipeline(config, engines=(ENGINE,)) as pipeline:
        heavy_done, bells_done = await _heavy_then_bells(bus, config, "light")
        pipeline.check()
    assert min(bells_done) > heavy_done


async def test_submit_prints_the_prediction_of_a_heavy_job(
    config: Config, bus: Bus, tmp_path: Path
):
    program = tmp_path / "dynamic.qasm"
    program.write_text(dynamic_qasm(10, 2))
    cfg_file = tmp_path / "qbus.toml"
    cfg_file.write_text(config_toml(config))
    async with Pipeline(_lanes_config(config, HEAVY_SECONDS / 100), engines=(ENGINE,)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qbus",
            "--config",
            str(cfg_file),
            "submit",
            str(program),
            "--shots",
            "50",
            "--engine",
            ENGINE,
            "--job-id",
            "heavy-cli",
            "--wait",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        status = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qbus",
            "--config",
            str(cfg_file),
            "status",
            "heavy-cli",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        status_out, _ = await asyncio.wait_for(status.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 0, text + out.decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("predicted run time")]
    assert len(lines) == 1, text
    assert lines[0].endswith(f"on {ENGINE} (heavy lane)"), lines
    assert "(heavy lane)" in status_out.decode() and "predicted ~" in status_out.decode()


async def test_heavy_run_survives_a_killed_executor(config: Config, bus: Bus, tmp_path: Path):
    """kill -9 of the executor mid heavy run: the supervisor's new copy runs it, once."""
    await bus.ensure_executor(ENGINE)
    cfg_file = tmp_path / "qbus.toml"
    cfg_file.write_text(config_toml(config) + f"[lanes]\nheavy_seconds = {HEAVY_SECONDS}\n")
    sup = Supervisor(config.bus.url, tmp_path / "logs", extra_env={"QBUS_CONFIG": str(cfg_file)})
    sup.start()
    try:
        heavy = job(HEAVY, shots=HEAVY_SHOTS, engine=ENGINE, optimize=False, cache=False)
        await bus.publish(heavy)
        heavy_durable = bus.executor_durable(ENGINE, "heavy")

        async def slot_has_it() -> bool:
            sup.poll()
            try:
                info = await bus.js.consumer_info(config.bus.stream, heavy_durable)
            except Exception:
                return False
            return info.num_ack_pending >= 1

        await _wait_for(slot_has_it, 90, "a heavy slot to take the job")
        executor = next(p for p in sup.processes if p.name.startswith("execute"))
        assert executor.proc is not None and executor.proc.poll() is None
        executor.proc.send_signal(signal.SIGKILL)
        executor.proc.wait()

        async def done() -> bool:
            sup.poll()
            return await count_results(bus, heavy.job_id) >= 1

        await _wait_for(done, 180, "the heavy job to finish after the restart")
        assert executor.restarts >= 1
        assert isinstance(await wait_final(bus, heavy.job_id, 5), JobCompleted)
        info = await bus.js.consumer_info(config.bus.stream, heavy_durable)
        assert info.delivered.consumer_seq >= 2  # the killed copy's delivery came back
        await asyncio.sleep(config.bus.ack_wait + 1)  # a straggler would show by now
        assert await count_results(bus, heavy.job_id) == 1
        assert len(await _stored(bus, bus.subjects.executed(heavy.job_id))) == 1
    finally:
        sup.stop()
