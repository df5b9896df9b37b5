"""The result object store is bounded (issue 17, defect 11): a TTL and a quota set at
provisioning, a job whose result would not fit fails with ``result_store_full``, and a
state vector is streamed into the store rather than copied whole."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

import msgspec
import numpy as np
import pytest
from nats.js import api as js_api

from qbus.bus.blobs import (
    ObjectStoreBlobs,
    ResultStoreFull,
    statevector_buffer,
    statevector_from_bytes,
)
from qbus.bus.config import Config, Limits
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import JobCompleted, JobFailed
from tests.jobs import job, run_jobs

pytestmark = pytest.mark.timeout(180)

QUOTA = 3 * 2**20


def _statevector_job(qubits: int):
    source = f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{qubits}];\nh q[0];\ncx q[0],q[1];\n'
    return job(source, method="statevector")


@pytest.fixture
def small_store(config: Config) -> Config:
    """Results above 10 qubits go to the store, whose quota is 3 MiB."""
    return msgspec.structs.replace(
        config,
        bus=msgspec.structs.replace(config.bus, results_ttl=3600.0, results_max_bytes=QUOTA),
        limits=Limits(inline_statevector_qubits=10),
    )


@pytest.fixture
async def small_store_bus(small_store: Config, bus: Bus) -> AsyncIterator[Pipeline]:
    async with Pipeline(small_store) as p:
        yield p
        p.check()


async def _store_config(bus: Bus) -> js_api.StreamConfig:
    store = await bus.js.object_store(bus.config.object_store)
    return (await store.status()).stream_info.config


async def test_the_store_gets_its_ttl_and_quota_also_when_it_existed_unbounded(config: Config):
    async with await Bus.connect(config.bus) as raw:
        # A store as provisioning made it before it had limits.
        await raw.js.create_object_store(config.bus.object_store)
        before = await _store_config(raw)
        assert not before.max_age and before.max_bytes in (None, -1)

        await raw.provision()
        defaults = await _store_config(raw)
        assert defaults.max_age == 7 * 86_400.0 and defaults.max_bytes == 4 * 2**30

    bounded = msgspec.structs.replace(config.bus, results_ttl=60.0, results_max_bytes=QUOTA)
    async with await Bus.connect(bounded) as bus:
        await bus.provision()
        stream = await _store_config(bus)
        assert stream.max_age == 60.0 and stream.max_bytes == QUOTA


async def test_a_result_over_the_quota_fails_the_job_with_its_code(
    bus: Bus, small_store: Config, small_store_bus: Pipeline
):
    fits, too_big = _statevector_job(16), _statevector_job(18)  # 1 MiB, 4 MiB
    finals = await run_jobs(bus, [fits, too_big])
    assert isinstance(finals[0], JobCompleted), finals[0]
    assert finals[0].statevector_ref, finals[0]
    stored = statevector_from_bytes(await ObjectStoreBlobs(bus).get(finals[0].statevector_ref))
    assert stored.shape == (2**16,) and abs(stored[0]) == pytest.approx(2**-0.5)

    assert isinstance(finals[1], JobFailed), finals[1]
    assert finals[1].code == "result_store_full", finals[1]
    assert "4.0 MiB" in finals[1].message and "3.0 MiB quota" in finals[1].message, finals[1]
    # Refused whole: only the first result is in the store.
    assert (
        await (await bus.js.object_store(bus.config.object_store)).status()
    ).stream_info.state.bytes < 2 * 2**20


async def test_a_put_over_the_quota_leaves_nothing_and_a_vector_is_not_copied(
    small_store: Config,
):
    async with await Bus.connect(small_store.bus) as bus:
        await bus.provision()
        blobs = ObjectStoreBlobs(bus)
        vector = np.exp(1j * np.arange(2**17)).astype(np.complex128)  # 2 MiB
        tracemalloc.start()
        try:
            ref = await blobs.put("v", statevector_buffer(vector))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Streamed in 128 KiB chunks: far less than the vector's 2 MiB held at once.
        assert peak < vector.nbytes // 2, peak
        assert np.array_equal(statevector_from_bytes(await blobs.get(ref)), vector)

        with pytest.raises(ResultStoreFull) as refused:
            await blobs.put("w", statevector_buffer(vector))
        assert refused.value.code == "result_store_full"
        state = (await (await bus.js.object_store(bus.config.object_store)).status()).stream_info
        assert state.state.bytes < vector.nbytes * 1.1, state.state
