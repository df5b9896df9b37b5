"""Secrets providers against a real OpenBao dev server (issue 7, acceptance 3)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import (
    AuthConfig,
    BusConfig,
    Config,
    SecretsConfig,
    VaultConfig,
)
from qbus.bus.connection import Bus
from qbus.bus.runner import StageRunner
from qbus.bus.server import NatsServer
from qbus.errors import Retry
from qbus.producers.submit import wait_final
from qbus.schemas.events import Event, JobCompleted, JobFailed, JobSubmitted, derived_event_id
from qbus.secrets import (
    CachedSecret,
    EnvSecrets,
    FileSecrets,
    SecretError,
    load_config,
    provider_from_config,
    resolve_secrets,
)
from tests.jobs import QASM2_BELL, job
from tests.openbao_fixtures import OpenBao

KEY = "chain/verifier_key"


def vault_config(bao: OpenBao, tmp_path: Path, **vault: object) -> Config:
    token_file = tmp_path / "vault-token"
    token_file.write_text(bao.token + "\n")
    return Config(
        secrets=SecretsConfig(
            provider="vault",
            cache_seconds=0.2,
            vault=VaultConfig(url=bao.url, token_file=str(token_file), **vault),  # type: ignore[arg-type]
        )
    )


def test_env_and_file_providers(tmp_path: Path) -> None:
    assert EnvSecrets({"QBUS_SECRET_CHAIN_VERIFIER_KEY": "k1"}).get(KEY) == "k1"
    with pytest.raises(SecretError, match="QBUS_SECRET_CHAIN_VERIFIER_KEY"):
        EnvSecrets({}).get(KEY)
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "verifier_key").write_text("k2\n")
    assert FileSecrets(tmp_path).get(KEY) == "k2"
    with pytest.raises(SecretError, match="not readable"):
        FileSecrets(tmp_path).get("nats/none")


def test_vault_token_read_and_errors(openbao: OpenBao, tmp_path: Path) -> None:
    openbao.put(KEY, "0xkey-one")
    provider = provider_from_config(vault_config(openbao, tmp_path))
    assert provider.name == "vault"
    assert provider.get(KEY) == "0xkey-one"
    with pytest.raises(SecretError, match=r"'nats/nobody' not found in Vault at http://127\.0"):
        provider.get("nats/nobody")
    # A secret without the configured field names the fields it has, not their values.
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="qbus/odd", secret={"other": "hidden-value"}, mount_point="secret"
    )
    with pytest.raises(SecretError, match="has no field 'value' \\(it has: other\\)") as info:
        provider.get("odd")
    assert "hidden-value" not in str(info.value)
    # A wrong token is denied with a message that says so.
    bad = tmp_path / "bad-token"
    bad.write_text("not-a-token")
    cfg = vault_config(openbao, tmp_path)
    cfg = msgspec.structs.replace(
        cfg,
        secrets=msgspec.structs.replace(
            cfg.secrets, vault=msgspec.structs.replace(cfg.secrets.vault, token_file=str(bad))
        ),
    )
    with pytest.raises(SecretError, match="denied reading secret"):
        provider_from_config(cfg).get(KEY)


def test_vault_approle(openbao: OpenBao, tmp_path: Path) -> None:
    root = openbao.client()
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "qbus-read", 'path "secret/data/qbus/*" { capabilities = ["read"] }'
    )
    root.auth.approle.create_or_update_approle("qbus-verifier", token_policies=["qbus-read"])
    role_id = root.auth.approle.read_role_id("qbus-verifier")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("qbus-verifier")["data"]["secret_id"]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    openbao.put(KEY, "0xapprole")
    config = Config(
        secrets=SecretsConfig(
            provider="vault",
            vault=VaultConfig(
                url=openbao.url, auth="approle", role_id=role_id, secret_id_file=str(secret_file)
            ),
        )
    )
    provider = provider_from_config(config)
    assert provider.get(KEY) == "0xapprole"
    # The policy allows qbus/* only: anything else is denied, with a clear message.
    openbao.put("x", "y", prefix="elsewhere")
    other = msgspec.structs.replace(config.secrets.vault, path_prefix="elsewhere", role_id=role_id)
    with pytest.raises(SecretError, match="lack a policy with read"):
        provider_from_config(
            msgspec.structs.replace(
                config, secrets=msgspec.structs.replace(config.secrets, vault=other)
            )
        ).get("x")


def test_rotation_is_picked_up_without_restart(openbao: OpenBao, tmp_path: Path) -> None:
    openbao.put(KEY, "0xold")
    secret = CachedSecret(provider_from_config(vault_config(openbao, tmp_path)), KEY, ttl=0.2)
    assert secret.get() == "0xold"
    openbao.put(KEY, "0xnew")  # rotate in Vault; same provider, same CachedSecret
    deadline = time.monotonic() + 10
    value = secret.get()
    while value != "0xnew" and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting out the cache TTL under test, not synchronising
        value = secret.get()
    assert value == "0xnew"
    assert "0x" not in repr(secret)


def test_vault_down_is_a_clear_error(openbao: OpenBao, tmp_path: Path) -> None:
    openbao.put(KEY, "0xkey")
    provider = provider_from_config(vault_config(openbao, tmp_path))
    secret = CachedSecret(provider, KEY, ttl=0.0, retry_delay=0.5, max_retry_delay=2.0)
    assert secret.get() == "0xkey"
    openbao.stop()
    with pytest.raises(SecretError, match=rf"Vault at {openbao.url} is unreachable") as info:
        secret.get()
    assert "chain/verifier_key" in str(info.value)

    async def delays() -> list[float]:
        out = []
        for _ in range(4):
            with pytest.raises(Retry) as retry:
                await secret.require()
            assert "unreachable" in retry.value.message
            out.append(retry.value.delay)
        return out

    # Backoff doubles per consecutive failure, up to the cap.
    assert asyncio.run(delays()) == [1.0, 2.0, 2.0, 2.0]


class _KeyedHandler:
    """A stage that needs the verifier key for every job (as the anchor stage does).

    It completes nothing real: it answers each submission with a JobFailed whose code
    carries the key's sha256 prefix, so the test sees which key version was used
    without the key itself ever being on the bus.
    """

    def __init__(self, secret: CachedSecret) -> None:
        self.secret = secret
        self.attempts: dict[str, int] = {}

    async def handle(self, event: Event) -> Sequence[Event]:
        if not isinstance(event, JobSubmitted):
            return []
        self.attempts[event.job_id] = self.attempts.get(event.job_id, 0) + 1
        key = await self.secret.require()
        return [
            JobFailed(
                event_id=derived_event_id(event.event_id, "job.failed", job_id=event.job_id),
                job_id=event.job_id,
                causation_id=event.event_id,
                producer="tests.keyed",
                code="key-" + hashlib.sha256(key.encode()).hexdigest()[:12],
                message="test stage",
            )
        ]


async def test_stage_retries_while_vault_is_down(
    openbao: OpenBao, tmp_path: Path, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    openbao.put(KEY, "0xfirst")
    provider = provider_from_config(vault_config(openbao, tmp_path))
    handler = _KeyedHandler(CachedSecret(provider, KEY, ttl=0.0, retry_delay=0.2))
    runner = StageRunner(
        bus, stage="keyed", durable="keyed", subjects=[bus.subjects.submit], handler=handler
    )
    task = asyncio.create_task(runner.run())
    try:
        first = job(QASM2_BELL)
        await bus.publish(first)
        done = await wait_final(bus, first.job_id, 30)
        assert isinstance(done, JobFailed)
        assert done.code == "key-" + hashlib.sha256(b"0xfirst").hexdigest()[:12]

        openbao.stop()
        caplog.set_level(logging.WARNING, logger="qbus.secrets")
        second = job(QASM2_BELL)
        await bus.publish(second)
        deadline = time.monotonic() + 20
        while handler.attempts.get(second.job_id, 0) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # waiting for the runner's redelivery, observed
        assert handler.attempts[second.job_id] >= 2  # nak'd and redelivered, not failed
        assert any(
            "secret 'chain/verifier_key' unavailable" in r.getMessage()
            and "unreachable" in r.getMessage()
            for r in caplog.records
        )
        # Vault back (a dev server starts empty: the operator restores the secret).
        openbao.start()
        openbao.put(KEY, "0xsecond")
        done = await wait_final(bus, second.job_id, 30)
        assert isinstance(done, JobFailed)
        assert done.code == "key-" + hashlib.sha256(b"0xsecond").hexdigest()[:12]
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)


async def test_stage_gives_up_with_the_vault_error(
    openbao: OpenBao, tmp_path: Path, nats_server: NatsServer
) -> None:
    """After max_deliver attempts the job fails, and its message says why."""
    provider = provider_from_config(vault_config(openbao, tmp_path))
    openbao.stop()
    config = BusConfig(url=nats_server.url, ack_wait=2.0, max_deliver=3, duplicate_window=60)
    bus = await Bus.connect(config)
    await bus.provision()
    handler = _KeyedHandler(CachedSecret(provider, KEY, ttl=0.0, retry_delay=0.1))
    runner = StageRunner(
        bus, stage="keyed", durable="keyed", subjects=[bus.subjects.submit], handler=handler
    )
    task = asyncio.create_task(runner.run())
    try:
        submitted = job(QASM2_BELL)
        await bus.publish(submitted)
        final = await wait_final(bus, submitted.job_id, 30)
        assert isinstance(final, JobFailed)
        assert final.code == "retries_exhausted"
        assert "Vault at" in final.message and "unreachable" in final.message
        assert handler.attempts[submitted.job_id] == 3
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
        await bus.close()


def test_nats_credentials_and_cloud_keys_from_vault(
    openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[bus] password_secret`` and ``[secrets] environment`` are read at load time."""
    openbao.put("nats/svc", "s3cret-nats-pw")
    openbao.put("aws/access_key_id", "AKIATESTKEY")
    token_file = tmp_path / "token"
    token_file.write_text(openbao.token)
    toml = tmp_path / "qbus.toml"
    toml.write_text(
        '[bus]\nuser = "svc"\npassword_secret = "nats/svc"\n'
        '[secrets]\nprovider = "vault"\n'
        'environment = {QBUS_TEST_AWS_KEY = "aws/access_key_id"}\n'
        f'[secrets.vault]\nurl = "{openbao.url}"\ntoken_file = "{token_file}"\n'
    )
    monkeypatch.delenv("QBUS_TEST_AWS_KEY", raising=False)
    config = load_config(toml, env={})
    assert config.bus.password == "s3cret-nats-pw"
    import os

    assert os.environ["QBUS_TEST_AWS_KEY"] == "AKIATESTKEY"
    monkeypatch.delenv("QBUS_TEST_AWS_KEY")
    # Nothing to resolve: the config is returned as is, no provider is asked.
    plain = Config(auth=AuthConfig())
    assert resolve_secrets(plain) is plain


async def _every_stored_message(bus: Bus) -> list[bytes]:
    """Data and headers of every message in every stream on the server (event log,
    audit chain, job-state KV, object store): everything the bus keeps."""
    out: list[bytes] = []
    for info in await bus.js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(info.config.name, seq)
            except Exception:  # a deleted sequence (KV deletes, purges)
                continue
            out.append(f"{msg.subject} {msg.headers!r} ".encode() + (msg.data or b""))
    return out


async def test_secrets_never_reach_events_logs_or_traces(
    openbao: OpenBao, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Auth mode with every NATS password in Vault, a verifier key, a cloud key: run jobs
    (completed, rejected, a tenant's), then grep the whole event stream, every log line
    (in-process and a stage process's stderr), the server log and every span."""
    import os
    import subprocess
    import sys

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from qbus.bus.auth import init_auth, tenant_inbox, tenant_user
    from qbus.bus.tenancy import wait_tenant_result
    from qbus.consumers.pipeline import Pipeline
    from qbus.observability import tracing
    from qbus.schemas.events import JobRejected, encode

    auth = init_auth(tmp_path / "auth", ["A"])
    values = {f"nats/{user}": auth.password(user) for user in auth.users}
    values[KEY] = "0x" + "ab" * 32
    values["aws/secret_access_key"] = "AWS-SECRET-" + os.urandom(8).hex()
    for key, value in values.items():
        openbao.put(key, value)
    token_file = tmp_path / "vault-token"
    token_file.write_text(openbao.token)

    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    tracing.use_exporter(spans)
    with NatsServer(tmp_path / "nats", config=auth.conf) as server:
        toml = tmp_path / "qbus.toml"
        toml.write_text(
            f'[bus]\nurl = "{server.url}"\nuser = "admin"\npassword_secret = "nats/admin"\n'
            "ack_wait = 2.0\nduplicate_window = 60\n"
            "[auth]\nstage_users = true\n"
            '[secrets]\nprovider = "vault"\ncache_seconds = 0.0\n'
            'environment = {QBUS_TEST_AWS_SECRET = "aws/secret_access_key"}\n'
            f'[secrets.vault]\nurl = "{openbao.url}"\ntoken_file = "{token_file}"\n'
        )
        config = load_config(toml, env={})
        stderr = tmp_path / "ingest.stderr"
        # ingest runs as its own process (its stderr is grepped); the rest in-process.
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qbus", "-v", "stage", "ingest"],
                env={**os.environ, "QBUS_CONFIG": str(toml)},
                stderr=err,
                stdout=err,
            )
        try:
            stages = ("rewrite", "route", "execute", "verify", "audit")
            async with Pipeline(config, stages=stages) as pipeline:
                admin = await Bus.connect(config.bus)
                tenant_cfg = msgspec.structs.replace(
                    config.bus,
                    user=tenant_user("A"),
                    password=values["nats/tenant-A"],
                    inbox_prefix=tenant_inbox("A"),
                )
                tenant = await Bus.connect(tenant_cfg)
                try:
                    good, bad = job(QASM2_BELL, shots=300), job("OPENQASM 2.0; qreg q[1]; hx q[0];")
                    for j in (good, bad):
                        await admin.publish(j)
                    theirs = job(QASM2_BELL, shots=300, tenant="A")
                    await tenant.js.publish(
                        tenant.subjects.for_event(theirs),
                        encode(theirs),
                        headers={"Nats-Msg-Id": theirs.event_id},
                    )
                    assert isinstance(await wait_final(admin, good.job_id, 60), JobCompleted)
                    assert isinstance(await wait_final(admin, bad.job_id, 60), JobRejected)
                    mine = await wait_tenant_result(tenant, "A", theirs.job_id, 60)
                    assert isinstance(mine, JobCompleted)
                    # A stage reading the verifier key, also while Vault is down (logged).
                    secret = CachedSecret(provider_from_config(config), KEY, ttl=0.0)
                    assert await secret.require() == values[KEY]
                    openbao.stop()
                    with pytest.raises(Retry):
                        await secret.require()
                    stored = await _every_stored_message(admin)
                finally:
                    await tenant.close()
                    await admin.close()
                pipeline.check()
        finally:
            proc.terminate()
            proc.wait(10)
            tracing.reset()
        server_log = server.log_path.read_bytes()
    assert os.environ.pop("QBUS_TEST_AWS_SECRET") == values["aws/secret_access_key"]
    stage_stderr = stderr.read_bytes()
    assert b"stage ingest ready" in stage_stderr or b"consuming" in stage_stderr
    assert len(stored) > 20 and caplog.records and spans.get_finished_spans()
    haystacks = {
        "event stream": b"\n".join(stored),
        "caplog": caplog.text.encode(),
        "stage stderr": stage_stderr,
        "nats-server log": server_log,
        "spans": "\n".join(s.to_json() for s in spans.get_finished_spans()).encode(),
    }
    for key, value in values.items():
        for where, text in haystacks.items():
            assert value.encode() not in text, f"secret {key} appears in the {where}"


@pytest.mark.timeout(180)
async def test_the_anchor_stage_reads_the_verifier_key_from_vault(
    openbao: OpenBao,
    tmp_path: Path,
    chain_qbus_config: Config,
    bus: Bus,
    verifier_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real anchor stage signs with the key it reads from OpenBao: the env variable
    the chain fixtures set is removed first, so Vault is the only place the key is."""
    from qbus.consumers.pipeline import Pipeline
    from qbus.schemas.events import ResultAnchored, decode
    from tests.chain_fixtures import VERIFIER_KEY_VAR

    monkeypatch.delenv(VERIFIER_KEY_VAR)
    openbao.put(KEY, verifier_key)
    config = msgspec.structs.replace(
        chain_qbus_config, secrets=vault_config(openbao, tmp_path).secrets
    )
    assert config.chain.key_secret == KEY
    submitted = job(QASM2_BELL, shots=64)
    async with Pipeline(
        config, stages=("ingest", "rewrite", "route", "execute", "verify", "anchor")
    ) as pipeline:
        await bus.publish(submitted)
        final = await wait_final(bus, submitted.job_id, 60)
        assert isinstance(final, JobCompleted)
        sub = await bus.js.subscribe(
            bus.subjects.anchored(submitted.job_id), stream=bus.config.stream, ordered_consumer=True
        )
        try:
            anchored = decode((await sub.next_msg(timeout=60)).data)
        finally:
            await sub.unsubscribe()
        pipeline.check()
    assert isinstance(anchored, ResultAnchored)
    assert anchored.result_hash == final.result_hash and anchored.tx_hash
