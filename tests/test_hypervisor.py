"""Sandbox drivers on real processes and real bubblewrap namespaces, no mocks.

bwrap tests fail (never skip) when bubblewrap is missing: ``scripts/setup.sh`` installs it,
so its absence on CI is a broken setup, not an optional feature.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config, HypervisorConfig
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.consumers.pipeline import Pipeline
from qbus.engines import registry
from qbus.engines.base import RunRequest
from qbus.errors import ConfigError, LimitError, SandboxFailure
from qbus.frontends.qasm import parse_qasm
from qbus.hypervisor import make_sandbox
from qbus.hypervisor.base import RunLimits, Sandbox, choose_driver, run_limits
from qbus.producers.submit import wait_final
from qbus.schemas.events import ExecutionCompleted, JobCompleted, JobFailed, JobRejected
from qbus.secrets import load_config
from tests import hostile_engine
from tests.hostile_engine import HostileEngine
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(120)

BELL, _ = parse_qasm(QASM2_BELL)
LIMITS = RunLimits(memory_mb=512, cpu_seconds=10, wall_seconds=20)
ENGINE = HostileEngine()
ENGINE_TARGET = "tests.hostile_engine:HostileEngine"


def require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap (bwrap) is not installed: run scripts/setup.sh as root")


@pytest.fixture(scope="module")
def bwrap() -> Iterator[Sandbox]:
    require_bwrap()
    sandbox = make_sandbox("bwrap", 1, ["tests.hostile_engine:HostileEngine"])
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def process() -> Iterator[Sandbox]:
    sandbox = make_sandbox("process", 1, ["tests.hostile_engine:HostileEngine"])
    yield sandbox
    sandbox.close()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A TCP server on a free loopback port: what a job might try to reach (like NATS)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def reached(server: socket.socket) -> bool:
    """Whether anyone connected to ``server`` (the connection waits in its backlog)."""
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.fixture
def state_secret(tmp_path: Path) -> Path:
    """A file under a project state dir (``.qbus``), as credentials and stores would be."""
    secret = tmp_path / "project" / ".qbus" / "creds"
    secret.parent.mkdir(parents=True)
    secret.write_text("nats token")
    return secret


def request(**markers: float) -> RunRequest:
    return RunRequest(circuit=BELL, shots=200, seed=3, parameters=markers)


def test_normal_circuit_runs_under_bwrap_with_metrics(bwrap: Sandbox):
    result = bwrap.run(ENGINE, request(), LIMITS)
    assert sum(result.counts.values()) == 200
    assert set(result.counts) <= {"00", "11"}
    assert result.peak_rss_mb and result.peak_rss_mb > 1
    assert result.cpu_seconds is not None and result.wall_seconds is not None


def test_statevector_crosses_the_pipe_as_bytes(process: Sandbox):
    src = QASM2_BELL.replace("measure q -> c;\n", "")
    circuit, _ = parse_qasm(src)
    result = process.run(ENGINE, RunRequest(circuit=circuit, method="statevector"), LIMITS)
    assert result.statevector.dtype.name == "complex128"
    assert abs(result.statevector[0]) ** 2 == pytest.approx(0.5)


@pytest.mark.parametrize(
    "action, says",
    [
        # The sandbox's own loopback: nothing listens there, the host's is out of reach.
        ("socket", "Connection refused"),
        ("read:/etc/shadow", "No such file"),
        ("state", "No such file"),
        ("write:/escaped", "Read-only file system"),
        ("write:engine_dir", "Read-only file system"),
    ],
)
def test_bwrap_denies_hostile_engine_code(
    bwrap: Sandbox, server: socket.socket, state_secret: Path, action: str, says: str
):
    markers = {
        "socket": {"socket": float(server.getsockname()[1])},
        "state": {f"read:{state_secret}": 1.0},
        "write:engine_dir": {f"write:{Path(hostile_engine.__file__).parent / 'escaped'}": 1.0},
    }.get(action, {action: 1.0})
    with pytest.raises(SandboxFailure) as info:
        bwrap.run(ENGINE, request(**markers), LIMITS)
    assert info.value.code == "sandbox_violation"
    assert says in str(info.value)
    assert not reached(server)
    # The same worker goes on serving normal jobs.
    assert sum(bwrap.run(ENGINE, request(), LIMITS).counts.values()) == 200


def test_the_same_code_reaches_out_without_bwrap(
    process: Sandbox, server: socket.socket, state_secret: Path
):
    # Under ``process`` (no namespaces) the very same engine code gets through: what
    # bwrap denies above is the sandbox's doing, not a broken test engine.
    markers = {"socket": float(server.getsockname()[1]), f"read:{state_secret}": 1.0}
    assert sum(process.run(ENGINE, request(**markers), LIMITS).counts.values()) == 200
    assert reached(server)


def test_wall_timeout_and_worker_keeps_serving(process: Sandbox):
    # ``spin`` burns CPU; with a CPU cap far above the wall cap, the wall clock ends it.
    limits = RunLimits(memory_mb=512, cpu_seconds=60, wall_seconds=0.5)
    with pytest.raises(SandboxFailure) as info:
        process.run(ENGINE, request(spin=30.0), limits)
    assert info.value.code == "wall_timeout"
    assert sum(process.run(ENGINE, request(), LIMITS).counts.values()) == 200


def test_a_dead_worker_is_replaced(process: Sandbox):
    # Engine code that kills its worker fails only its own job.
    with pytest.raises(SandboxFailure) as info:
        process.run(ENGINE, request(kill_parent=1.0), LIMITS)
    assert info.value.code == "worker_died"
    assert sum(process.run(ENGINE, request(), LIMITS).counts.values()) == 200
    # A worker killed while idle is replaced before it is handed a job.
    (idle,) = process._idle
    idle.proc.kill()
    idle.proc.wait()
    assert sum(process.run(ENGINE, request(), LIMITS).counts.values()) == 200


def test_a_crash_far_below_the_memory_limit_is_no_memory_limit(process: Sandbox):
    # A segfault is a memory verdict only with evidence of memory (see the JAX test).
    with pytest.raises(SandboxFailure) as info:
        process.run(ENGINE, request(segv=1.0), LIMITS)
    assert info.value.code == "worker_died"
    assert "SIGSEGV" in str(info.value)


@pytest.mark.parametrize(
    ("method", "memory_mb", "how"),
    [
        # XLA aborts (SIGABRT) on a buffer it could not allocate, well below the limit
        # in resident memory: was ``worker_died``, retried as if it might pass.
        ("statevector", 300, "SIGABRT"),
        # XLA raises RESOURCE_EXHAUSTED, wrapped in the engine's EngineError: was
        # ``engine_error``.
        ("sample", 400, "Out of memory"),
    ],
)
def test_jax_run_over_its_memory_limit_is_memory_limit(method: str, memory_mb: int, how: str):
    engine = registry.get_engine("jax")
    qubits = 24  # a 256 MiB state: fits the limit once, not the copies XLA makes
    source = QASM2_BELL.replace("q[2]", f"q[{qubits}]").replace("c[2]", f"c[{qubits}]")
    wide, _ = parse_qasm(source)
    sandbox = make_sandbox("process", 1, [f"{type(engine).__module__}:{type(engine).__name__}"])
    try:
        with pytest.raises(SandboxFailure) as info:
            sandbox.run(
                engine,
                RunRequest(circuit=wide, shots=100, seed=1, method=method),
                RunLimits(memory_mb=memory_mb, cpu_seconds=60, wall_seconds=60),
            )
        assert info.value.code == "memory_limit", info.value
        assert how in str(info.value)
    finally:
        sandbox.close()


def test_a_running_job_ends_with_its_executor():
    from qbus.hypervisor.process import ProcessSandbox, Worker
    from qbus.hypervisor.worker import Job, RunLimitsMsg, write_frame

    sandbox = ProcessSandbox(1, ["tests.hostile_engine:HostileEngine"])
    worker = Worker(sandbox.argv(), sandbox.env(), "process")
    limits = RunLimitsMsg(memory_mb=512, cpu_seconds=60, wall_seconds=60)
    write_frame(worker._in, Job(engine=ENGINE_TARGET, request=request(spin=60.0), limits=limits))
    # What the executor's death looks like to its worker: stdin closes mid-job.
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=10) == 0
    worker.close()


def test_driver_policy_and_limit_clamping():
    cfg = HypervisorConfig(engines={"hostile": "process"}, max_memory_mb=1024)
    assert choose_driver("auto", "qiskit-aer", cfg) == "inline"
    assert choose_driver("auto", "hostile", cfg) == "process"
    assert choose_driver("bwrap", "qiskit-aer", cfg) == "bwrap"
    strict = msgspec.structs.replace(cfg, minimum="bwrap")
    assert choose_driver("inline", "qiskit-aer", strict) == "bwrap"
    with pytest.raises(LimitError):
        choose_driver("vm", "qiskit-aer", cfg)
    limits = run_limits(cfg, memory_mb=99_999, cpu_seconds=2.0)
    assert limits.memory_mb == 1024 and limits.cpu_seconds == 2.0
    assert limits.wall_seconds == cfg.max_wall_seconds


# --- through the bus -------------------------------------------------------------------


@pytest.fixture
async def sandboxed(
    config: Config, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Pipeline]:
    """Every stage, with executors for qiskit-aer and the hostile test engine."""
    monkeypatch.setitem(registry.BUILTIN_ENGINES, "hostile", "tests.hostile_engine:HostileEngine")
    cfg = msgspec.structs.replace(config, hypervisor=HypervisorConfig(max_memory_mb=2048))
    async with Pipeline(cfg, engines=("qiskit-aer", "hostile")) as p:
        yield p
        p.check()


async def _timed(bus: Bus, submitted) -> tuple[object, float]:
    start = time.monotonic()
    await bus.publish(submitted)
    final = await wait_final(bus, submitted.job_id, 60)
    return final, time.monotonic() - start


@pytest.mark.parametrize("driver", ["process", "bwrap"])
async def test_limits_kill_runs_and_executor_keeps_serving(
    bus: Bus, sandboxed: Pipeline, driver: str
):
    if driver == "bwrap":
        require_bwrap()
    common = {"engine": "hostile", "hypervisor": driver, "shots": 500}
    # Warm the executor's worker so the timings below are of the runs, not of start-up.
    (warm,) = await run_jobs(bus, [job(QASM2_BELL, **common)])
    assert isinstance(warm, JobCompleted), warm

    memory, elapsed = await _timed(
        bus, job(QASM2_BELL, parameters={"alloc_mb": 4096.0}, memory_mb=256, **common)
    )
    assert isinstance(memory, JobFailed), memory
    assert memory.code == "memory_limit", memory
    # No time limit is involved: the allocation fails at the cap, well within 2 s.
    assert elapsed < 2.0, elapsed

    cpu_limit = 1.0
    cpu, elapsed = await _timed(
        bus, job(QASM2_BELL, parameters={"spin": 60.0}, cpu_seconds=cpu_limit, **common)
    )
    assert isinstance(cpu, JobFailed), cpu
    assert cpu.code == "cpu_limit", cpu
    assert elapsed < cpu_limit + 2.0, elapsed

    (after,) = await run_jobs(bus, [job(QASM2_BELL, **common)])
    assert isinstance(after, JobCompleted), after
    assert after.verification.verdict == "pass"


@pytest.mark.parametrize("driver", ["process", "bwrap"])
async def test_aer_bell_job_completes_under_sandbox(bus: Bus, sandboxed: Pipeline, driver: str):
    if driver == "bwrap":
        require_bwrap()
    submitted = job(QASM2_BELL, hypervisor=driver, shots=2000)
    (final,) = await run_jobs(bus, [submitted])
    assert isinstance(final, JobCompleted), final
    assert final.engine == "qiskit-aer"
    assert final.verification.verdict == "pass"
    executed = [
        e async for _, _, e in events_of(bus, submitted.job_id) if isinstance(e, ExecutionCompleted)
    ]
    assert executed[0].hypervisor == driver
    assert executed[0].peak_rss_mb and executed[0].cpu_seconds is not None


@pytest.mark.parametrize("driver", ["process", "bwrap"])
def test_jax_runs_in_a_forked_sandbox_child(driver: str):
    """JAX is not fork-safe (XLA's thread pools): the zygote must not start it, or every
    forked child deadlocks until its wall limit."""
    if driver == "bwrap":
        require_bwrap()
    engine = registry.get_engine("jax")
    assert not engine.fork_safe
    bell = BELL
    sandbox = make_sandbox(driver, 1, [f"{type(engine).__module__}:{type(engine).__name__}"])
    try:
        for _ in range(2):  # the second job reuses the warm zygote
            result = sandbox.run(
                engine,
                RunRequest(circuit=bell, shots=400, seed=5),
                RunLimits(memory_mb=2048, cpu_seconds=60, wall_seconds=60),
            )
            assert result.counts is not None and set(result.counts) <= {"00", "11"}
            assert sum(result.counts.values()) == 400
    finally:
        sandbox.close()


async def test_state_too_big_for_memory_cap_is_rejected_at_ingest(bus: Bus, sandboxed: Pipeline):
    wide = QASM2_BELL.replace("q[2]", "q[28]").replace("c[2]", "c[28]")
    asked = job(QASM2_BELL, memory_mb=32)
    # 4 GiB of state against the 2 GiB cap (named: `auto` may try the tensor network)
    capped = job(wide, engine="qiskit-aer")
    unknown = job(QASM2_BELL, hypervisor="firecracker")
    finals = await run_jobs(bus, [asked, capped, unknown])
    assert [f.code for f in finals] == [
        "exceeds_memory_cap",
        "exceeds_memory_cap",
        "unknown_hypervisor",
    ]
    assert all(isinstance(f, JobRejected) for f in finals)


# --- qbus doctor -----------------------------------------------------------------------


def test_doctor_reports_every_driver_working():
    require_bwrap()
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "doctor", "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["driver"]: c for c in json.loads(out.stdout)}
    assert set(checks) == {"inline", "process", "bwrap"}
    assert all(c["works"] for c in checks.values()), checks


def test_doctor_says_how_to_install_bwrap_when_missing(tmp_path: Path):
    # A PATH without bwrap on it: what a machine without the package looks like.
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "doctor"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
    )
    assert out.returncode == 1
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("bwrap"))
    assert "FAILS" in line and "apt-get install -y bubblewrap" in line
    assert any(ln.startswith("process  ok") for ln in out.stdout.splitlines()), out.stdout


def test_hypervisor_config_from_toml_and_env(tmp_path: Path):
    path = tmp_path / "qbus.toml"
    path.write_text('[hypervisor]\nminimum = "process"\nengines = {"hostile" = "bwrap"}\n')
    cfg = load_config(path, env={}).hypervisor
    assert cfg.minimum == "process" and cfg.engines == {"hostile": "bwrap"}
    assert load_config(path, env={"QBUS_HYPERVISOR_MINIMUM": "bwrap"}).hypervisor.minimum == (
        "bwrap"
    )
    path.write_text('[hypervisor]\nminimum = "vm"\n')
    with pytest.raises(ConfigError, match="minimum must be one of inline, process, bwrap"):
        load_config(path, env={})


def test_the_jax_compile_cache_reaches_process_workers_but_not_bwrap(monkeypatch):
    from qbus.hypervisor.bwrap import BwrapSandbox
    from qbus.hypervisor.process import ProcessSandbox

    monkeypatch.setenv("QBUS_JAX_CACHE_DIR", "/srv/qbus/jax-cache")
    assert ProcessSandbox(1, []).env()["QBUS_JAX_CACHE_DIR"] == "/srv/qbus/jax-cache"
    # bwrap clears the environment and binds no shared writable directory: a job
    # could otherwise leave a compiled program behind for the next job to load.
    bwrap = BwrapSandbox(1, [])
    assert "QBUS_JAX_CACHE_DIR" not in bwrap.env()
    assert "/srv/qbus/jax-cache" not in " ".join(bwrap.argv())
