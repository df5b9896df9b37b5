"""qbus on a 3-node JetStream cluster: server lists, replicas, provisioning that never
lowers what an operator set, start-up that waits for a server, and node loss with
jobs in flight (real nats-server processes, real kill -9 and SIGSTOP).

The node-loss tests run ``QBUS_CLUSTER_JOBS`` jobs each (120 by default, about half a
minute); ``QBUS_CLUSTER_JOBS=1000`` is the long form, run by hand (figures in
docs/operations.md, "A cluster"). Each prints its time to recover (first result after the
fault) and its drain time; neither is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats.errors
import pytest

from qbus.bus.config import BusConfig, Config, read_config
from qbus.bus.connection import Bus
from qbus.bus.job_log import stored_events
from qbus.bus.server import NatsCluster, NatsServer
from qbus.errors import ConfigError
from qbus.producers.submit import submit
from qbus.schemas.events import JobCompleted
from qbus.supervisor import Supervisor
from qbus.verifier.log_audit import verify_log
from tests.jobs import QASM2_BELL, job

JOBS = int(os.environ.get("QBUS_CLUSTER_JOBS", "120"))

pytestmark = pytest.mark.timeout(300 if JOBS <= 200 else 1800)
ASSETS = (
    "QBUS",
    "QBUS_AUDIT",
    "QBUS_TENANT",
    "QBUS_ADVISORIES",
    "KV_QBUS_JOBS",
    "KV_QBUS_CHAIN",
    "KV_QBUS_CACHE",
    "KV_QBUS_CHUNKS",
    "OBJ_QBUS_RESULTS",
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=3) as c:
        yield c


def cluster_config(cluster: NatsCluster, tmp_path: Path, replicas: int = 3) -> Config:
    # Redeliveries must outlast a leader election (several seconds): with a 2 s ack
    # wait, five deliveries of a message whose ack went to the lost node end inside one
    # election and the message becomes a dead letter.
    return Config(
        bus=BusConfig(
            url=cluster.url, replicas=replicas, ack_wait=10.0, max_deliver=5, duplicate_window=120
        ),
        state_dir=str(tmp_path / "state"),
    )


@pytest.fixture
async def cluster_bus(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[Bus]:
    bus = await Bus.connect(cluster_config(cluster, tmp_path).bus, name="qbus-test")
    await bus.provision()
    await bus.provision()  # again, as every stage does at start: nothing to report
    assert bus.mismatches == []
    yield bus
    await bus.close()


async def replicas_of(bus: Bus) -> dict[str, int]:
    return {name: (await bus.js.stream_info(name)).config.num_replicas for name in ASSETS}


# --- configuration ---------------------------------------------------------------------


def test_a_server_list_comes_from_qbus_url_commas_or_bus_servers(tmp_path: Path):
    env = {"QBUS_URL": "nats://127.0.0.1:1, nats://127.0.0.1:2,nats://127.0.0.1:3"}
    assert read_config(env=env).bus.server_urls == [
        "nats://127.0.0.1:1",
        "nats://127.0.0.1:2",
        "nats://127.0.0.1:3",
    ]
    toml = tmp_path / "qbus.toml"
    toml.write_text('[bus]\nservers = ["nats://a:4222", "nats://b:4222"]\nreplicas = 3\n')
    bus = read_config(toml, env={}).bus
    assert bus.server_urls == ["nats://a:4222", "nats://b:4222"] and bus.replicas == 3
    # QBUS_URL names the servers: it replaces the file's list, as it replaces its url.
    assert read_config(toml, env={"QBUS_URL": "nats://c:1"}).bus.server_urls == ["nats://c:1"]
    assert read_config(env={"QBUS_REPLICAS": "3"}).bus.replicas == 3
    assert BusConfig().server_urls == ["nats://127.0.0.1:4222"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QBUS_URL": "nats://a:1,a:2"}, "server URL must look like nats://host:port"),
        ({"QBUS_URL": "nats://a:1,,http://b"}, "server URL must look like"),
        ({"QBUS_REPLICAS": "2"}, "replicas must be 1 or 3"),
        ({"QBUS_REPLICAS": "three"}, "QBUS_REPLICAS must be a whole number"),
    ],
)
def test_bad_server_lists_and_replicas_are_config_errors(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message) as caught:
        read_config(env=env)
    assert caught.value.code == "invalid_config"


# --- provisioning on a cluster ---------------------------------------------------------


async def test_provisioning_makes_every_asset_with_the_configured_replicas(
    cluster: NatsCluster, cluster_bus: Bus
):
    assert await replicas_of(cluster_bus) == dict.fromkeys(ASSETS, 3)
    assert cluster_bus.mismatches == []
    info = await cluster_bus.js.stream_info("QBUS")
    names = {n.server_name for n in cluster.nodes}
    assert info.cluster is not None and info.cluster.leader in names
    assert info.config.duplicate_window == 120


async def test_reprovisioning_never_lowers_replicas_and_reports_the_mismatch(
    cluster: NatsCluster, cluster_bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # A stage configured for R1 starting against assets an operator runs at R3: the
    # issue's "set back to R1 the next time any stage restarts".
    async with await Bus.connect(cluster_config(cluster, tmp_path, replicas=1).bus) as r1:
        await r1.provision()
        assert await replicas_of(r1) == dict.fromkeys(ASSETS, 3)
        assert {m.asset for m in r1.mismatches} == set(ASSETS)
        assert all(m.field == "num_replicas" and m.found == "3" for m in r1.mismatches)
    warned = [r.getMessage() for r in caplog.records if "num_replicas is 3" in r.getMessage()]
    assert len(warned) == len(ASSETS)


async def test_reprovisioning_raises_replicas_of_r1_assets(cluster: NatsCluster, tmp_path: Path):
    async with await Bus.connect(cluster_config(cluster, tmp_path, replicas=1).bus) as r1:
        await r1.provision()
        assert await replicas_of(r1) == dict.fromkeys(ASSETS, 1)
    async with await Bus.connect(cluster_config(cluster, tmp_path, replicas=3).bus) as r3:
        await r3.provision()
        assert await replicas_of(r3) == dict.fromkeys(ASSETS, 3)
        assert r3.mismatches == []


async def test_reprovisioning_leaves_an_operators_setting_and_reports_it(bus: Bus):
    info = await bus.js.stream_info(bus.config.stream)
    info.config.duplicate_window = 600.0
    await bus.js.update_stream(info.config)
    await bus.provision()
    info = await bus.js.stream_info(bus.config.stream)
    assert info.config.duplicate_window == 600.0
    (mismatch,) = bus.mismatches
    assert (mismatch.asset, mismatch.field, mismatch.found) == ("QBUS", "duplicate_window", "600.0")


def test_doctor_reports_the_cluster(cluster: NatsCluster, cluster_bus: Bus, tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "doctor", "--bus", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "QBUS_URL": cluster.url, "QBUS_REPLICAS": "3"},
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    names = {n.server_name for n in cluster.nodes}
    assert report["cluster"] == "qbus" and set(report["nodes"]) == names
    assert {a["name"] for a in report["assets"]} == set(ASSETS)
    for asset in report["assets"]:
        assert asset["replicas"] == 3 and asset["leader"] in names
        assert {p["node"] for p in asset["peers"]} == names
    # Configured for one replica, the same cluster is a mismatch per asset and exit 1.
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "doctor", "--bus"],
        capture_output=True,
        text=True,
        env={**os.environ, "QBUS_URL": cluster.url, "QBUS_REPLICAS": "1"},
        timeout=60,
    )
    assert out.returncode == 1
    assert sum(ln.startswith("MISMATCH") for ln in out.stdout.splitlines()) == len(ASSETS)


# --- servers that go away and come back ------------------------------------------------


def test_a_stage_started_while_its_server_is_down_waits_for_it(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", port=-1).start()
    url = server.url
    server.stop()
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as out:
        stage = subprocess.Popen(
            [sys.executable, "-m", "qbus", "stage", "ingest"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "QBUS_URL": url, "QBUS_STATE_DIR": str(tmp_path / "state")},
        )
    try:
        deadline = time.monotonic() + 60
        while "retrying in" not in log_path.read_text():
            assert stage.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        server.start()  # the same port and store
        while "stage ingest ready" not in log_path.read_text():
            assert stage.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert "Traceback" not in log_path.read_text()
    finally:
        stage.terminate()
        stage.wait(10)
        server.stop()


def test_the_supervisor_starts_a_dead_nats_server_again(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", port=-1).start()
    try:
        sup = Supervisor(server.url, tmp_path / "logs", servers=[("nats-server", server)])
        url = server.url
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not sup.poll_servers():
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.05)
        assert server.running() and server.url == url and sup.servers[0].restarts == 1
    finally:
        server.stop()


# --- node loss with jobs in flight -----------------------------------------------------


async def _retry(call: Callable[[], Awaitable[object]]) -> object:
    """A read through the cluster, retried while it elects a new leader."""
    while True:
        try:
            return await call()
        except (TimeoutError, nats.errors.Error):
            await asyncio.sleep(0.2)


async def _results(bus: Bus) -> dict[str, int]:
    """Events on each job's result subject, from one stream-info call."""
    info = await _retry(
        lambda: bus.js.stream_info(bus.config.stream, subjects_filter=bus.subjects.result(">"))
    )
    prefix = bus.subjects.result("")
    return {s.removeprefix(prefix): n for s, n in (info.state.subjects or {}).items()}


async def _done(bus: Bus, want: int, sup: Supervisor, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        sup.poll()
        counts = await _results(bus)
        if len(counts) >= want:
            return counts
        assert time.monotonic() < deadline, f"{len(counts)} of {want} jobs ended"
        await asyncio.sleep(0.1)


async def _leader(bus: Bus) -> str:
    info = await _retry(lambda: bus.js.stream_info(bus.config.stream))
    return info.cluster.leader


async def run_through_fault(
    cluster: NatsCluster,
    tmp_path: Path,
    fault: Callable[[Bus], Awaitable[Callable[[], Awaitable[None]]]],
    what: str,
) -> None:
    """Run ``JOBS`` jobs: half submitted, ``fault`` called when a tenth have ended, the
    other half submitted during the fault, what ``fault`` returns (the repair) awaited
    when half have ended; then check every job ended exactly once, completed, and
    that the audit chain verifies."""
    config = cluster_config(cluster, tmp_path)
    cfg_file = tmp_path / "qbus.toml"
    b = config.bus
    cfg_file.write_text(
        f'state_dir = "{config.state_dir}"\n[bus]\nurl = "{b.url}"\nreplicas = 3\n'
        f"ack_wait = {b.ack_wait}\nmax_deliver = {b.max_deliver}\n"
        f"duplicate_window = {b.duplicate_window}\n"
    )
    env = {"QBUS_CONFIG": str(cfg_file)}
    bus = await Bus.connect(config.bus, name="qbus-test")
    await bus.provision()
    await bus.ensure_executor("qiskit-aer")
    sup = Supervisor(b.url, tmp_path / "logs", extra_env=env)
    sup.start()
    try:
        jobs = [job(QASM2_BELL, shots=64) for _ in range(JOBS)]
        for j in jobs[: JOBS // 2]:
            await bus.publish(j)
        await _done(bus, JOBS // 10, sup, 180)
        before = len(await _results(bus))
        fault_at = time.monotonic()
        repair = await fault(bus)
        # The other half is submitted during the fault, as a client would: a publish
        # that gets no ack is sent again with the same event id (the server drops a copy).
        for j in jobs[JOBS // 2 :]:
            await _retry(lambda j=j: bus.publish(j))
        while len(await _results(bus)) <= before:
            sup.poll()
            assert time.monotonic() - fault_at < 120, "no result after the fault"
            await asyncio.sleep(0.05)
        recover = time.monotonic() - fault_at
        await _done(bus, JOBS // 2, sup, 180)
        await repair()
        counts = await _done(bus, JOBS, sup, 240 + JOBS * 0.5)
        drain = time.monotonic() - fault_at
        # A straggler (a redelivered copy) would show within ack_wait; give it that long.
        await asyncio.sleep(config.bus.ack_wait + 1)
        counts = await _results(bus)
        assert set(counts) == {j.job_id for j in jobs}
        doubled = {job_id: n for job_id, n in counts.items() if n != 1}
        assert doubled == {}, f"jobs with more than one final event: {doubled}"
        # Every final event is a completion: one reader over every result subject (a
        # reader per job would create a thousand consumers in the long form).
        finals: dict[str, object] = {}
        async with contextlib.aclosing(
            stored_events(bus, [bus.subjects.result(">")], timeout=120)
        ) as events:
            while len(finals) < len(jobs):
                _, event = await anext(events)
                finals[event.job_id] = event
        assert all(isinstance(e, JobCompleted) for e in finals.values()), finals
        deadline = time.monotonic() + 60
        while (report := await verify_log(bus)).ok and report.unaudited:
            assert time.monotonic() < deadline, f"{report.unaudited} events not chained"
            await asyncio.sleep(0.5)
        assert report.ok, report.problem
        out = subprocess.run(
            [sys.executable, "-m", "qbus", "audit", "verify"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        assert out.returncode == 0 and "audit OK" in out.stdout, out.stdout + out.stderr
        print(
            f"\n{what}: {JOBS} jobs, 0 lost, 0 doubled; time to recover (first result "
            f"after the fault) {recover:.2f} s; drain (fault to last result) {drain:.2f} s"
        )
    finally:
        sup.stop()
        await bus.close()


async def test_kill_9_of_the_stream_leader_loses_nothing(cluster: NatsCluster, tmp_path: Path):
    async def kill_leader(bus: Bus) -> Callable[[], Awaitable[None]]:
        node = cluster.node(await _leader(bus))
        node.kill()
        return lambda: asyncio.to_thread(node.start)

    await run_through_fault(cluster, tmp_path, kill_leader, "kill -9 of the stream leader")


async def test_a_stalled_stream_leader_loses_nothing(cluster: NatsCluster, tmp_path: Path):
    async def stall_leader(bus: Bus) -> Callable[[], Awaitable[None]]:
        node = cluster.node(await _leader(bus))
        pid = node.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

        async def wake() -> None:
            # The stall lasts 10 s (a partitioned node), whatever the jobs do meanwhile.
            await asyncio.sleep(10)
            os.kill(pid, signal.SIGCONT)

        woken = asyncio.ensure_future(wake())
        return lambda: woken

    await run_through_fault(cluster, tmp_path, stall_leader, "SIGSTOP of the leader for 10 s")


async def test_kill_9_of_a_follower_loses_nothing(cluster: NatsCluster, tmp_path: Path):
    async def kill_follower(bus: Bus) -> Callable[[], Awaitable[None]]:
        leader = await _leader(bus)
        node = next(n for n in cluster.nodes if n.server_name != leader)
        node.kill()
        return lambda: asyncio.to_thread(node.start)

    await run_through_fault(cluster, tmp_path, kill_follower, "kill -9 of a follower")


# --- qbus up --cluster 3 ---------------------------------------------------------------


async def test_a_submit_while_the_stream_elects_a_leader_is_sent_again_not_refused(
    cluster: NatsCluster, cluster_bus: Bus
):
    # Until the stream has a new leader, a publish to it gets "no responders" (503),
    # which alone reads like a server qbus was never set up on. submit() asks whether the
    # stream exists, and since it does, publishes again (same event id) until it is stored.
    bus = cluster_bus
    node = cluster.node(await _leader(bus))
    node.kill()
    try:
        first = job(QASM2_BELL, shots=16)
        sequence = await submit(bus, first)
        assert sequence > 0
        again = await submit(bus, first)  # a copy: the stream drops it, same sequence
        assert again == sequence
        counts = await _results_of(bus, bus.subjects.submit)
        assert counts == 1, counts
    finally:
        node.start()


async def _results_of(bus: Bus, subject: str) -> int:
    info = await _retry(lambda: bus.js.stream_info(bus.config.stream, subjects_filter=subject))
    return sum((info.state.subjects or {}).values())


def test_up_cluster_runs_three_nodes_and_restarts_a_killed_one(tmp_path: Path):
    env = {**os.environ, "QBUS_STATE_DIR": str(tmp_path / "state")}
    env.pop("QBUS_URL", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "qbus", "up", "--cluster", "3", "--port", "-1", "--no-metrics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []

    def read_until(prefix: str) -> None:
        while not any(ln.startswith(prefix) for ln in lines):
            line = up.stdout.readline()
            assert line, "qbus up exited early:\n" + "".join(lines)
            lines.append(line)

    try:
        read_until("logs in")
        nodes = [ln.split() for ln in lines if ln.startswith("nats-server")]
        assert [n[2] for n in nodes] == ["qbus-1", "qbus-2", "qbus-3"], lines
        cluster_line = next(ln for ln in lines if ln.startswith("cluster"))
        assert "replicas 3" in cluster_line
        url = cluster_line.split("QBUS_URL=")[1].split()[0]
        assert url.split(",") == [n[1] for n in nodes]
        client_env = {**env, "QBUS_URL": url, "QBUS_REPLICAS": "3"}
        program = tmp_path / "bell.qasm"
        program.write_text(QASM2_BELL)
        submit = [sys.executable, "-m", "qbus", "submit", str(program), "--wait"]
        out = subprocess.run(submit, capture_output=True, text=True, env=client_env, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        # A node killed under `qbus up` is started again, and the bus keeps working.
        pid = int(nodes[0][-1].rstrip(")"))
        os.kill(pid, signal.SIGKILL)
        read_until("restarted nats-server qbus-1")
        out = subprocess.run(submit, capture_output=True, text=True, env=client_env, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        doctor = [sys.executable, "-m", "qbus", "doctor", "--bus", "--json"]
        out = subprocess.run(doctor, capture_output=True, text=True, env=client_env, timeout=60)
        assert out.stdout.startswith("{"), out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert set(report["nodes"]) == {"qbus-1", "qbus-2", "qbus-3"}, out.stdout
        assert all(a["replicas"] == 3 for a in report["assets"]), out.stdout
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
