"""NATS auth mode, TLS and tenant limits (issue 7, acceptance 4): real nats-server
processes started with the config ``qbus auth init`` writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from qbus.bus.auth import AuthFiles, _password, init_auth, tenant_inbox, tenant_user
from qbus.bus.config import AuthConfig, BusConfig, Config, SecretsConfig, TenantLimits
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.bus.signing import generate_keys
from qbus.bus.tenancy import wait_tenant_refusal, wait_tenant_result
from qbus.client import Client
from qbus.consumers.pipeline import Pipeline
from qbus.errors import BusError
from qbus.producers.submit import wait_final
from qbus.schemas.events import (
    CircuitIngested,
    JobCompleted,
    JobFailed,
    JobRejected,
    decode,
    encode,
    new_event_id,
    new_job_id,
)
from tests.jobs import QASM2_BELL, QASM3_GHZ, job


@pytest.fixture
def auth_files(tmp_path: Path) -> AuthFiles:
    return init_auth(tmp_path / "auth", ["A", "B"])


@pytest.fixture
def auth_server(auth_files: AuthFiles, tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats", config=auth_files.conf) as server:
        yield server


def _bus_config(server: NatsServer, **fields: object) -> BusConfig:
    return BusConfig(
        url=server.url,
        ack_wait=2.0,
        max_deliver=5,
        duplicate_window=60,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def auth_config(auth_server: NatsServer, auth_files: AuthFiles, tmp_path: Path) -> Config:
    """The operator's config: admin on [bus], stages as their own users, file secrets."""
    return Config(
        bus=_bus_config(auth_server, user="admin", password=auth_files.password("admin")),
        auth=AuthConfig(stage_users=True),
        secrets=SecretsConfig(provider="file", directory=str(auth_files.secrets_dir)),
        state_dir=str(tmp_path / "state"),
    )


class _Errors:
    """Collects the asynchronous errors nats-py reports (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        """The ``error_cb`` (nats-py wants a coroutine function)."""
        self.seen.append(str(exc))

    async def wait_for(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.seen:
                if text.lower() in line.lower():  # nats-py lowercases the -ERR text
                    return line
            await asyncio.sleep(0.02)  # the server's -ERR arrives asynchronously
        raise AssertionError(f"no error containing {text!r}; got {self.seen}")


def _tenant_config(server: NatsServer, files: AuthFiles, tenant: str) -> BusConfig:
    user = tenant_user(tenant)
    return _bus_config(
        server, user=user, password=files.password(user), inbox_prefix=tenant_inbox(tenant)
    )


async def _tenant(
    server: NatsServer, files: AuthFiles, tenant: str, errors: _Errors | None = None
) -> Bus:
    extra = {"error_cb": errors.record} if errors else {}
    config = _tenant_config(server, files, tenant)
    return await Bus.connect(config, name=tenant_user(tenant), **extra)


@pytest.fixture
async def auth_pipeline(auth_config: Config) -> AsyncIterator[Pipeline]:
    async with Pipeline(auth_config) as pipeline:
        yield pipeline
        pipeline.check()


def test_generated_config_has_users_and_private_files(auth_files: AuthFiles) -> None:
    text = auth_files.conf.read_text()
    for user in ("admin", "ingest", "route", "execute", "verify", "audit", "tenant-A"):
        assert f'"user": "{user}"' in text
    assert '"qbus.submit.A"' in text and '"qbus_tenant.A.>"' in text
    assert auth_files.conf.stat().st_mode & 0o077 == 0
    assert (auth_files.secrets_dir / "nats" / "tenant-B").stat().st_mode & 0o077 == 0
    # Passwords survive a re-init that adds a tenant; --rotate replaces them.
    before = auth_files.password("ingest")
    again = init_auth(auth_files.directory, ["A", "B", "C"])
    assert again.password("ingest") == before and "tenant-C" in again.users
    assert init_auth(auth_files.directory, ["A"], rotate=True).password("ingest") != before


async def test_tenant_job_runs_under_stage_users(
    auth_pipeline: Pipeline, auth_server: NatsServer, auth_files: AuthFiles, auth_config: Config
) -> None:
    # Each stage is connected as its own user (a stage user lacking a permission it
    # needs would stall the job below).
    users = {key: stage.bus.config.user for key, stage in auth_pipeline.stages.items()}
    assert users == {
        "ingest": "ingest",
        "rewrite": "rewrite",
        "route": "route",
        "execute-qiskit-aer": "execute",
        "verify": "verify",
        "audit": "audit",
        "control": "control",
    }
    tenant = await _tenant(auth_server, auth_files, "A")
    try:
        # The payload claims tenant B: ingest takes the tenant from the subject instead.
        submitted = job(QASM2_BELL, shots=500)
        ack = await tenant.js.publish(
            tenant.subjects.submit_for("A"),
            encode(msgspec.structs.replace(submitted, tenant="B")),
            headers={"Nats-Msg-Id": submitted.event_id},
        )
        assert ack.seq > 0  # the PubAck came back through the tenant's own inbox
        final = await wait_tenant_result(tenant, "A", submitted.job_id, timeout=60)
        assert isinstance(final, JobCompleted), final
        assert final.verification.verdict == "pass"
        assert final.tenant == "A"
        # Read again later: the stored copy, through a direct get A is allowed.
        again = await wait_tenant_result(tenant, "A", submitted.job_id, timeout=5)
        assert again == final
    finally:
        await tenant.close()
    admin = await Bus.connect(auth_config.bus)
    try:
        ingested = decode(
            (await admin.js.get_last_msg("QBUS", admin.subjects.ingested(submitted.job_id))).data
        )
        assert isinstance(ingested, CircuitIngested) and ingested.options.tenant == "A"
        plain = await wait_final(admin, submitted.job_id, 5)  # qbus.result.<job> as ever
        assert plain == final
        # The audit stage, as user "audit", chains the events into its own stream (a
        # record covers a batch of events).
        deadline = time.monotonic() + 30
        while (await admin.js.stream_info("QBUS_AUDIT")).state.messages < 1:
            assert time.monotonic() < deadline, "the audit stage chained nothing"
            await asyncio.sleep(0.05)  # polling the audit stream under test
        # The copy is in the tenant stream, not the event log: the log has each event once.
        copies = await admin.js.stream_info("QBUS_TENANT", subjects_filter="qbus_tenant.>")
        assert copies.state.subjects == {f"qbus_tenant.A.result.{submitted.job_id}": 1}
        log = await admin.js.stream_info("QBUS", subjects_filter=f"qbus.*.{submitted.job_id}")
        assert set(log.state.subjects or {}) == {
            f"qbus.{kind}.{submitted.job_id}"
            for kind in ("ingested", "rewritten", "executed", "result")
        }
    finally:
        await admin.close()


async def test_tenant_cannot_read_others_or_publish_to_exec(
    auth_pipeline: Pipeline, auth_server: NatsServer, auth_files: AuthFiles, auth_config: Config
) -> None:
    errors = _Errors()
    tenant_a = await _tenant(auth_server, auth_files, "A", errors)
    tenant_b = await _tenant(auth_server, auth_files, "B")
    try:
        spy = await tenant_a.nc.subscribe("qbus_tenant.B.>")
        await tenant_a.nc.flush()
        line = await errors.wait_for('Permissions Violation for Subscription to "qbus_tenant.B.>"')
        assert line.startswith("nats: ")
        await tenant_a.nc.subscribe("qbus.result.>")
        await errors.wait_for('Permissions Violation for Subscription to "qbus.result.>"')
        await tenant_a.nc.publish("qbus.exec.qiskit-aer.sneaky-job", encode(job(QASM2_BELL)))
        await tenant_a.nc.flush()
        await errors.wait_for('Permissions Violation for Publish to "qbus.exec.qiskit-aer.')
        await tenant_a.nc.publish("qbus.submit.B", b"{}")
        await tenant_a.nc.flush()
        await errors.wait_for('Permissions Violation for Publish to "qbus.submit.B"')
        # Nor may A pull from a stage's consumer or read B's stored results.
        with pytest.raises(Exception):  # noqa: B017 - nats-py times out: no reply is allowed
            await tenant_a.nc.request("$JS.API.CONSUMER.MSG.NEXT.QBUS.ingest", b"1", timeout=1)
        await errors.wait_for('Permissions Violation for Publish to "$JS.API.CONSUMER.MSG.NEXT')
        assert tenant_a.nc.is_connected  # violations are refused, the connection stays

        # B's job runs (through the Python client as tenant B); A's subscription to B's
        # results never receives it.
        async with Client(config=tenant_b.config, tenant="B") as client:
            handle = await client.submit(QASM2_BELL, shots=200)
            final = await handle.result(timeout=60)
        assert isinstance(final, JobCompleted) and final.tenant == "B"
        with pytest.raises(TimeoutError):
            await spy.next_msg(timeout=0.5)
    finally:
        await tenant_a.close()
        await tenant_b.close()
    admin = await Bus.connect(auth_config.bus)
    try:
        info = await admin.js.stream_info("QBUS", subjects_filter="qbus.exec.*.sneaky-job")
        assert not info.state.subjects  # the refused publish never reached the log
    finally:
        await admin.close()


async def test_a_tenant_cannot_take_or_hang_another_tenants_job(
    auth_pipeline: Pipeline, auth_server: NatsServer, auth_files: AuthFiles, auth_config: Config
) -> None:
    # Issue 17, defect 3: B's submission reusing A's event id (another Nats-Msg-Id) once
    # derived A's ids, so one of the two jobs stayed "ingested"; and B reusing A's job id
    # got no final event at all.
    tenant_a = await _tenant(auth_server, auth_files, "A")
    tenant_b = await _tenant(auth_server, auth_files, "B")
    try:
        mine = job(QASM2_BELL, shots=100)
        await tenant_a.js.publish(
            tenant_a.subjects.submit_for("A"), encode(mine), headers={"Nats-Msg-Id": "a-1"}
        )
        copycat = msgspec.structs.replace(job(QASM2_BELL, shots=100), event_id=mine.event_id)
        await tenant_b.js.publish(
            tenant_b.subjects.submit_for("B"), encode(copycat), headers={"Nats-Msg-Id": "b-1"}
        )
        finals = await asyncio.gather(
            wait_tenant_result(tenant_a, "A", mine.job_id, timeout=60),
            wait_tenant_result(tenant_b, "B", copycat.job_id, timeout=60),
        )
        assert [type(f) for f in finals] == [JobCompleted, JobCompleted], finals
        # B again, now under A's job id (the same event id too): B is refused where B
        # can read it, and A's job keeps its one result.
        taker = msgspec.structs.replace(copycat, job_id=mine.job_id)
        for key, event in (("b-2", taker), ("b-3", job(QASM3_GHZ, job_id=mine.job_id))):
            await tenant_b.js.publish(
                tenant_b.subjects.submit_for("B"), encode(event), headers={"Nats-Msg-Id": key}
            )
            refused = await wait_tenant_refusal(tenant_b, "B", key, timeout=30)
            assert isinstance(refused, JobRejected) and refused.code == "duplicate_job_id"
            assert refused.tenant == "B" and refused.refusal == key
        again = await wait_tenant_result(tenant_a, "A", mine.job_id, timeout=5)
        assert again == finals[0]
        # B's client, submitting under A's job id: its result() is its refusal, at once.
        b_config = _tenant_config(auth_server, auth_files, "B")
        async with Client(config=b_config, tenant="B") as client:
            taken = await client.submit(QASM2_BELL, shots=10, job_id=mine.job_id)
            answer = await taken.result(timeout=15)
            assert isinstance(answer, JobRejected) and answer.code == "duplicate_job_id"
            assert answer.refusal == taken.event_id and answer.tenant == "B"
    finally:
        await tenant_a.close()
        await tenant_b.close()
    admin = await Bus.connect(auth_config.bus)
    try:
        results = await admin.js.stream_info("QBUS", subjects_filter=f"qbus.result.{mine.job_id}")
        assert results.state.subjects == {f"qbus.result.{mine.job_id}": 1}
        state = await admin.job_state(mine.job_id)
        assert state is not None and state.status == "completed"
    finally:
        await admin.close()


async def test_a_tenant_client_with_the_stage_keys_skips_a_forged_copy(
    auth_server: NatsServer, auth_files: AuthFiles, auth_config: Config
) -> None:
    # Tenant copies carried no stage signature and were taken as they were: a forged
    # copy stored first was the tenant's answer. Now a copy carries its original's
    # signature and a client with the stages' keys skips one that does not verify.
    public = generate_keys(auth_config.state_dir)
    job_id = new_job_id()
    forged = JobFailed(
        event_id=new_event_id(),
        job_id=job_id,
        producer="qbus.verify",
        code="engine_error",
        message="forged",
        stage="verify",
        tenant="A",
    )
    tenant_config = _tenant_config(auth_server, auth_files, "A")
    async with (
        Pipeline(auth_config) as pipeline,
        await Bus.connect(auth_config.bus) as admin,
        Client(config=tenant_config, tenant="A", trusted_keys=public) as client,
    ):
        await admin.js.publish(  # the operator's user may; a tenant's may not
            admin.subjects.tenant_result("A", job_id),
            encode(forged),
            headers={"Nats-Msg-Id": forged.event_id},
        )
        submitted = await client.submit(QASM2_BELL, shots=100, job_id=job_id)
        final = await submitted.result(timeout=60)
        assert isinstance(final, JobCompleted) and final.tenant == "A", final
        # Read again: the stored copy is the real one, and it verifies.
        assert await client.job(job_id).result(timeout=5) == final
        pipeline.check()


async def test_wrong_password_and_stage_limits(
    auth_server: NatsServer, auth_files: AuthFiles
) -> None:
    with pytest.raises(BusError, match="cannot connect"):
        await Bus.connect(_bus_config(auth_server, user="ingest", password="wrong"))
    errors = _Errors()
    ingest = await Bus.connect(
        _bus_config(auth_server, user="ingest", password=auth_files.password("ingest")),
        error_cb=errors.record,
    )
    try:
        # A stage may publish its own outputs only: ingest cannot route a job.
        await ingest.nc.publish("qbus.exec.qiskit-aer.j1", b"{}")
        await ingest.nc.flush()
        await errors.wait_for('Permissions Violation for Publish to "qbus.exec.qiskit-aer.j1"')
    finally:
        await ingest.close()


async def test_tls_connects_and_plaintext_is_refused(tmp_path: Path) -> None:
    files = init_auth(tmp_path / "auth", ["A"], tls=True)
    assert files.tls_ca is not None
    with NatsServer(tmp_path / "nats", config=files.conf) as server:
        admin = dict(user="admin", password=files.password("admin"))
        bus = await Bus.connect(_bus_config(server, tls_ca=str(files.tls_ca), **admin))
        try:
            await bus.provision()
            assert bus.nc.connected_server_version.major >= 2
            # The connection really is TLS: its stream carries an SSL object.
            ssl_object = bus.nc._transport._io_writer.get_extra_info("ssl_object")
            assert ssl_object is not None and ssl_object.version().startswith("TLS")
            assert (await bus.js.stream_info("QBUS")).config.name == "QBUS"
        finally:
            await bus.close()
        with pytest.raises(BusError, match="cannot connect"):
            await Bus.connect(_bus_config(server, **admin), connect_timeout=5)
        # A client that trusts another CA refuses the server's certificate.
        other = init_auth(tmp_path / "other", [], tls=True)
        with pytest.raises(BusError, match="cannot connect"):
            await Bus.connect(
                _bus_config(server, tls_ca=str(other.tls_ca), **admin), connect_timeout=5
            )


async def _routed(bus: Bus, job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await bus.job_state(job_id)
        if state is not None and state.status in ("routed", "completed", "failed", "rejected"):
            return state.status
        await asyncio.sleep(0.05)  # polling the job-state KV under test
    raise AssertionError(f"job {job_id} not routed in {timeout} s")


async def test_tenant_limits_reject_with_codes(config: Config, bus: Bus) -> None:
    """No auth needed: anyone may publish to qbus.submit.<tenant> on an open server."""
    config = msgspec.structs.replace(
        config,
        tenants={"A": TenantLimits(max_qubits=2, max_shots=1000, max_concurrent=1)},
    )
    await bus.ensure_executor("qiskit-aer")  # jobs wait routed until an executor runs
    stages = ("ingest", "rewrite", "route", "verify")
    async with Pipeline(config, stages=stages) as pipeline:
        too_wide = job(QASM3_GHZ, tenant="A")
        too_many_shots = job(QASM2_BELL, shots=5000, tenant="A")
        for j in (too_wide, too_many_shots):
            await bus.publish(j)
        wide = await wait_final(bus, too_wide.job_id, 30)
        shots = await wait_final(bus, too_many_shots.job_id, 30)
        assert isinstance(wide, JobRejected) and wide.code == "tenant_limit_qubits"
        assert "at most 2 qubits" in wide.message and wide.tenant == "A"
        assert isinstance(shots, JobRejected) and shots.code == "tenant_limit_shots"
        assert shots.where == "$.shots"

        first = job(QASM2_BELL, shots=100, tenant="A")
        await bus.publish(first)
        assert await _routed(bus, first.job_id) == "routed"  # running: waits for an executor
        second = job(QASM2_BELL, shots=100, tenant="A")
        other_tenant = job(QASM3_GHZ, shots=100, tenant="B")  # B has no limits
        untenanted = job(QASM3_GHZ, shots=100)
        for j in (second, other_tenant, untenanted):
            await bus.publish(j)
        busy = await wait_final(bus, second.job_id, 30)
        assert isinstance(busy, JobRejected) and busy.code == "tenant_concurrency"
        assert "limit is 1" in busy.message
        # The rejection is A's to read on its own result subject too.
        assert await wait_tenant_result(bus, "A", second.job_id, 5) == busy
        assert await _routed(bus, other_tenant.job_id) == "routed"
        assert await _routed(bus, untenanted.job_id) == "routed"

        async with Pipeline(config, stages=("execute",)):
            done = await wait_final(bus, first.job_id, 60)
            assert isinstance(done, JobCompleted)
            # The first job has its final event: A may run another.
            third = job(QASM2_BELL, shots=100, tenant="A")
            await bus.publish(third)
            assert isinstance(await wait_final(bus, third.job_id, 60), JobCompleted)
        pipeline.check()


async def test_invalid_tenant_subject_is_rejected(pipeline: Pipeline, bus: Bus) -> None:
    submitted = job(QASM2_BELL)
    await bus.js.publish(
        "qbus.submit.bad+name", encode(submitted), headers={"Nats-Msg-Id": submitted.event_id}
    )
    final = await wait_final(bus, submitted.job_id, 30)
    assert isinstance(final, JobRejected) and final.code == "invalid_tenant"


def test_generated_passwords_start_with_a_letter(tmp_path):
    # nats-server parses a variable's value (the chart's $QBUS_NATS_<USER>) as a config
    # value: a token that began "2021-" was read as a date and refused.
    made = {_password(tmp_path, "u", rotate=True) for _ in range(300)}
    assert len(made) == 300 and all(p[0].isalpha() for p in made)
