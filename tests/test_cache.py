"""The result cache on a real nats-server with every stage: hits, opt-out, TTL, key design."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import KeyNotFoundError

from qbus.bus.config import CacheConfig, Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.observability import metrics
from qbus.router.cache import cache_key, reusable
from qbus.schemas.events import JobCompleted, JobOptions, default_seed
from tests.jobs import QASM2_BELL, QASM3_GHZ, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(120)


async def _stored(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(bus.config.stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def _ran(bus: Bus, job_id: str) -> int:
    """ExecutionRequested + ExecutionCompleted/Failed events the log holds for a job."""
    s = bus.subjects
    return (
        await _stored(bus, s.exec("*", job_id))
        + await _stored(bus, f"{s.prefix}.exec.*.*.{job_id}")
        + await _stored(bus, s.executed(job_id))
    )


async def _cache_entries(bus: Bus) -> int:
    # The bucket's stream holds one message per key (history 1, nothing deleted here).
    # kv.keys() is not used: it once raised NoKeysError (read as 0) on a bucket that had
    # just been seen holding 2 entries (CI, 2026-12-07).
    info = await bus.js.stream_info(f"KV_{bus.config.kv_cache}")
    return info.state.messages


async def _until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_key_leaves_shots_and_seed_out_of_deterministic_methods():
    sample = JobOptions(method="sample", shots=100, seed=1)
    assert cache_key("h", sample, "exact") != cache_key(
        "h", JobOptions(method="sample", shots=100, seed=2), "exact"
    )
    assert cache_key("h", sample, "exact") != cache_key(
        "h", JobOptions(method="sample", shots=101, seed=1), "exact"
    )
    sv = JobOptions(method="statevector", shots=100, seed=1)
    assert cache_key("h", sv, "exact") == cache_key(
        "h", JobOptions(method="statevector", shots=5, seed=9), "exact"
    )
    # The engine asked for, the version policy, the circuit and the parameters all count.
    assert cache_key("h", sv, "exact") != cache_key("h", sv, "any")
    assert cache_key("h", sv, "exact") != cache_key(
        "h", JobOptions(method="statevector", engine="cirq"), "exact"
    )
    assert cache_key("h", sv, "exact") != cache_key("g", sv, "exact")
    assert cache_key("h", sv, "exact") != cache_key(
        "h", JobOptions(method="statevector", parameters={"t": 0.1}), "exact"
    )
    assert len(cache_key("h", sv, "exact")) == 64


async def test_a_cache_hit_answers_without_running_the_engine(bus: Bus, pipeline: Pipeline):
    executor = pipeline.stages["execute-qiskit-aer"]
    (first,) = await run_jobs(bus, [job(QASM2_BELL, shots=500, seed=11)])
    assert isinstance(first, JobCompleted) and not first.cached
    await _until(lambda: _entries_at_least(bus, 1))
    handled = executor.processed
    hits = metrics.CACHE_LOOKUPS.labels("hit")._value.get()
    second_job = job(QASM2_BELL, shots=500, seed=11)
    (second,) = await run_jobs(bus, [second_job])
    assert isinstance(second, JobCompleted), second
    assert second.cached and second.cached_from == first.job_id
    assert second.job_id == second_job.job_id and second.producer == "qbus.route"
    assert second.counts == first.counts and second.result_hash == first.result_hash
    # The engine was not called: nothing routed or run for the second job.
    assert await _ran(bus, second_job.job_id) == 0
    assert executor.processed == handled
    assert metrics.CACHE_LOOKUPS.labels("hit")._value.get() == hits + 1
    assert await count_results(bus, second_job.job_id) == 1
    state = await bus.job_state(second_job.job_id)
    assert state is not None and state.status == "completed"
    # A different seed is a different sample: it runs.
    (third,) = await run_jobs(bus, [job(QASM2_BELL, shots=500, seed=12)])
    assert isinstance(third, JobCompleted) and not third.cached


async def _entries_at_least(bus: Bus, n: int) -> bool:
    return await _cache_entries(bus) >= n


async def test_opt_out_and_unseeded_sampling_run_again(bus: Bus, pipeline: Pipeline):
    await run_jobs(bus, [job(QASM3_GHZ, shots=300, seed=5)])
    await _until(lambda: _entries_at_least(bus, 1))
    opted_out = job(QASM3_GHZ, shots=300, seed=5, cache=False)
    (again,) = await run_jobs(bus, [opted_out])
    assert isinstance(again, JobCompleted) and not again.cached
    assert await _ran(bus, opted_out.job_id) == 2
    # Unseeded sample jobs get a seed from their job id: never the same key, so they are
    # neither looked up nor stored (router/cache.py, `reusable`).
    a, b = await run_jobs(bus, [job(QASM3_GHZ, shots=300), job(QASM3_GHZ, shots=300)])
    (c,) = await run_jobs(bus, [job(QASM3_GHZ, shots=300)])
    assert not any(f.cached for f in (a, b, c))
    # A state vector does not depend on the seed: an unseeded rerun is a hit.
    unmeasured = QASM3_GHZ.replace("c = measure q;\n", "")
    (sv1,) = await run_jobs(bus, [job(unmeasured, method="statevector")])
    await _until(lambda: _entries_at_least(bus, 2))
    # The feedback consumer reads results in log order: a, b and c came before sv1, and
    # wrote nothing (the seeded job and sv1 are the two entries).
    assert await _cache_entries(bus) == 2
    (sv2,) = await run_jobs(bus, [job(unmeasured, method="statevector")])
    assert not sv1.cached and sv2.cached and sv2.cached_from == sv1.job_id
    assert sv2.statevector == sv1.statevector


async def test_entries_expire_after_the_ttl(config: Config, bus: Bus):
    short = Config(bus=config.bus, state_dir=config.state_dir, cache=CacheConfig(ttl_seconds=1.0))
    async with Pipeline(short) as pipeline:
        (first,) = await run_jobs(bus, [job(QASM2_BELL, shots=200, seed=3)])
        await _until(lambda: _entries_at_least(bus, 1))
        kv = await bus.js.key_value(bus.config.kv_cache)
        info = await bus.js.stream_info(f"KV_{bus.config.kv_cache}")
        assert info.config.max_age == pytest.approx(1.0)
        key = cache_key(first.circuit_hash, JobOptions(shots=200, seed=3), "exact")
        assert (await kv.get(key)).value  # the entry the first run wrote

        async def gone() -> bool:
            try:
                await kv.get(key)
            except KeyNotFoundError:
                return True
            return False

        await _until(gone, timeout=15)
        (second,) = await run_jobs(bus, [job(QASM2_BELL, shots=200, seed=3)])
        pipeline.check()
    assert isinstance(second, JobCompleted) and not second.cached


def test_only_jobs_that_can_share_a_key_use_the_cache():
    job_id = "a" * 32
    derived = default_seed(job_id)
    assert not reusable("sample", derived, job_id)  # nobody else can have this key
    assert reusable("sample", derived + 1, job_id)  # an explicit seed
    assert reusable("sweep", 7, job_id)
    for method in ("statevector", "expectation", "dynamics"):
        assert reusable(method, derived, job_id)  # the seed is not part of the key
