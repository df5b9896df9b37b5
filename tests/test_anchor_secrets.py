"""The anchor stage reads its verifier key from a real OpenBao while it runs (issue 7).

A real OpenBao dev server holds the key, a real anvil node the contract: a key rotated in
Vault signs the next batches without a restart, and while Vault is down (or down at start)
the stage says so, keeps every result and anchors them all once Vault is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config, SecretsConfig, VaultConfig
from qbus.bus.connection import Bus
from qbus.consumers.anchor import AnchorStage
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import JobCompleted
from qbus.secrets.base import SecretError
from qbus.verifier.chain import AnchorContract, account_from_key
from tests.chain_fixtures import VERIFIER_KEY_VAR
from tests.jobs import QASM2_BELL, job, run_jobs
from tests.openbao_fixtures import OpenBao
from tests.test_chain_anchor import anchored_events, check_against_chain, per_subject

pytestmark = pytest.mark.timeout(240)

KEY = "chain/verifier_key"
CORE_STAGES = ("ingest", "rewrite", "route", "execute", "verify")
KEY_ERROR = f"cannot read the verifier key {KEY!r} from the vault secrets store"


def vault_config(base: Config, bao: OpenBao, tmp_path: Path) -> Config:
    """``base`` with the verifier key read from ``bao`` (short caches: fast rotation)."""
    token_file = tmp_path / "vault-token"
    token_file.write_text(bao.token + "\n")
    secrets = SecretsConfig(
        provider="vault",
        cache_seconds=0.2,
        vault=VaultConfig(url=bao.url, token_file=str(token_file)),
    )
    return msgspec.structs.replace(base, secrets=secrets)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait until ``check()`` is true (a condition, polled; fails after ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def sender(contract: AnchorContract, tx_hash: str) -> str:
    """The ``from`` address of a mined transaction, as the chain records it."""
    return (await contract.w3.eth.get_transaction(tx_hash))["from"]


@contextlib.asynccontextmanager
async def running(stage: AnchorStage):
    task = asyncio.create_task(stage.run())
    try:
        yield task
        assert not task.done(), task.done() and task.exception()
    finally:
        stage.stop()
        async with asyncio.timeout(30):
            await task


async def test_a_rotated_verifier_key_signs_the_next_batches_without_restart(
    openbao: OpenBao,
    tmp_path: Path,
    chain_qbus_config: Config,
    bus: Bus,
    anvil,
    anchor_contract: AnchorContract,
    verifier_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VERIFIER_KEY_VAR)  # Vault is the only place the key is
    old = account_from_key(verifier_key)
    new = account_from_key(anvil.dev_keys[1])
    assert old.address != new.address
    # The owner grants the second account the verifier role before the key is rotated.
    await anchor_contract.set_verifier(new.address, True)
    assert await anchor_contract.is_verifier(new.address)
    openbao.put(KEY, verifier_key)
    stage = AnchorStage(bus, vault_config(chain_qbus_config, openbao, tmp_path))
    first = [job(QASM2_BELL, shots=32, seed=i) for i in range(4)]
    later = [job(QASM2_BELL, shots=32, seed=10 + i) for i in range(4)]
    async with Pipeline(chain_qbus_config, stages=CORE_STAGES), running(stage):
        assert all(isinstance(f, JobCompleted) for f in await run_jobs(bus, first))
        before = await anchored_events(bus, len(first), timeout=60)

        openbao.put(KEY, anvil.dev_keys[1])  # rotate in Vault; the stage keeps running
        assert stage.verifier_key is not None

        async def sees_new_key() -> bool:
            return account_from_key(await stage.verifier_key.aget()).address == new.address

        # The stage's own cached view of the secret shows the new key (ttl + provider cache).
        await eventually(sees_new_key)
        assert all(isinstance(f, JobCompleted) for f in await run_jobs(bus, later))
        events = await anchored_events(bus, len(first) + len(later), timeout=60)
        assert stage.contract is not None and stage.contract.account.address == new.address
    by_job = {e.job_id: e for e in events}
    assert {e.job_id for e in before} == {j.job_id for j in first}
    for j in first:
        assert await sender(anchor_contract, by_job[j.job_id].tx_hash) == old.address
    for j in later:
        assert await sender(anchor_contract, by_job[j.job_id].tx_hash) == new.address
    await check_against_chain(chain_qbus_config, anchor_contract, events)
    counts = await per_subject(bus, bus.subjects.anchored())
    assert len(counts) == 8 and set(counts.values()) == {1}


async def _held_and_unanchored(bus: Bus, stage: AnchorStage, held: int, anchored: int) -> None:
    """Nothing new anchored, and the stage still holds all ``held`` results unacked."""
    counts = await per_subject(bus, bus.subjects.anchored())
    assert sum(counts.values()) == anchored
    info = await bus.js.consumer_info(bus.config.stream, stage.durable)
    assert info.num_ack_pending == held
    assert info.num_redelivered == 0  # in-progress acks kept them from redelivery


async def test_vault_down_while_jobs_arrive_holds_the_batch_and_anchors_it_when_back(
    openbao: OpenBao,
    tmp_path: Path,
    chain_qbus_config: Config,
    bus: Bus,
    anchor_contract: AnchorContract,
    verifier_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="qbus")
    monkeypatch.delenv(VERIFIER_KEY_VAR)
    openbao.put(KEY, verifier_key)
    stage = AnchorStage(bus, vault_config(chain_qbus_config, openbao, tmp_path))
    warm = [job(QASM2_BELL, shots=32, seed=i) for i in range(2)]
    during = [job(QASM2_BELL, shots=32, seed=20 + i) for i in range(5)]
    async with Pipeline(chain_qbus_config, stages=CORE_STAGES), running(stage):
        await run_jobs(bus, warm)
        await anchored_events(bus, len(warm), timeout=60)

        openbao.stop()
        assert stage.verifier_key is not None

        async def key_unreadable() -> bool:
            try:
                await stage.verifier_key.aget()
            except SecretError:
                return True
            return False

        # Past the cached copy: the stage's next read goes to the (dead) server.
        await eventually(key_unreadable)
        finals = await run_jobs(bus, during)
        assert all(isinstance(f, JobCompleted) for f in finals)

        # Three failed reads (0.5 + 1 + 2 s of backoff) outlast ack_wait (2 s).
        await eventually(lambda: _count(caplog, KEY_ERROR, 3), timeout=60)
        await _held_and_unanchored(bus, stage, held=len(during), anchored=len(warm))
        errors = [r for r in caplog.records if KEY_ERROR in r.getMessage()]
        assert all(r.levelno == logging.ERROR for r in errors)
        assert all(f"Vault at {openbao.url} is unreachable" in r.getMessage() for r in errors)
        assert "retrying in" in errors[-1].getMessage()

        openbao.start()  # a dev server starts empty: the operator restores the secret
        openbao.put(KEY, verifier_key)
        events = await anchored_events(bus, len(warm) + len(during), timeout=90)
    assert verifier_key not in caplog.text
    by_job = {e.job_id: e for e in events}
    for final in finals:
        assert by_job[final.job_id].result_hash == final.result_hash
    await check_against_chain(chain_qbus_config, anchor_contract, events)
    counts = await per_subject(bus, bus.subjects.anchored())
    assert len(counts) == len(warm) + len(during) and set(counts.values()) == {1}


async def test_the_stage_starts_with_vault_down_and_anchors_once_it_is_back(
    openbao: OpenBao,
    tmp_path: Path,
    chain_qbus_config: Config,
    bus: Bus,
    anchor_contract: AnchorContract,
    verifier_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="qbus")
    monkeypatch.delenv(VERIFIER_KEY_VAR)
    config = vault_config(chain_qbus_config, openbao, tmp_path)
    openbao.stop()
    stage = AnchorStage(bus, config)
    jobs = [job(QASM2_BELL, shots=32, seed=i) for i in range(3)]
    async with Pipeline(chain_qbus_config, stages=CORE_STAGES), running(stage):
        finals = await run_jobs(bus, jobs)
        await eventually(lambda: _count(caplog, KEY_ERROR, 2), timeout=60)
        assert sum((await per_subject(bus, bus.subjects.anchored())).values()) == 0
        openbao.start()
        openbao.put(KEY, verifier_key)
        events = await anchored_events(bus, len(jobs), timeout=90)
    assert {e.job_id for e in events} == {f.job_id for f in finals}
    await check_against_chain(chain_qbus_config, anchor_contract, events)


async def _count(caplog: pytest.LogCaptureFixture, text: str, at_least: int) -> bool:
    return sum(text in r.getMessage() for r in caplog.records) >= at_least
