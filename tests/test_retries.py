"""Transient engine failures are run again with backoff, up to ``[retries] max_attempts``.

The engine is ``flaky`` (tests/flaky_engine.py): the reference engine, failing on the
runs its request's markers ask for and counting every run in a file, so the number of
runs is read from disk, not from the code under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config, RetriesConfig
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines import registry
from qbus.producers.submit import events_of
from qbus.schemas.events import (
    Event,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    derived_event_id,
)
from tests.jobs import QASM2_BELL, count_results, job, run_jobs

pytestmark = pytest.mark.timeout(120)

RETRIES = RetriesConfig(max_attempts=3, base_delay=0.3, max_delay=1.0)


@pytest.fixture
async def flaky(config: Config, bus: Bus, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bus]:
    """Stages up to verify, with an executor for the flaky test engine."""
    monkeypatch.setitem(registry.BUILTIN_ENGINES, "flaky", "tests.flaky_engine:FlakyEngine")
    cfg = msgspec.structs.replace(config, retries=RETRIES)
    stages = ("ingest", "rewrite", "route", "execute", "verify")
    async with Pipeline(cfg, stages=stages, engines=("flaky",)) as pipeline:
        yield bus
        pipeline.check()


async def _log(bus: Bus, job_id: str) -> list[Event]:
    return [event async for _, _, event in events_of(bus, job_id)]


def _runs(counter: Path) -> int:
    return int(counter.read_text())


async def test_two_transient_failures_then_success(flaky: Bus, tmp_path: Path):
    counter = tmp_path / "runs"
    submitted = job(QASM2_BELL, engine="flaky", shots=200, parameters={f"transient:{counter}": 2})
    (final,) = await run_jobs(flaky, [submitted])
    assert isinstance(final, JobCompleted), final
    assert final.verification.verdict == "pass"
    assert _runs(counter) == 3
    events = await _log(flaky, submitted.job_id)
    requests = [e for e in events if isinstance(e, ExecutionRequested)]
    failures = [e for e in events if isinstance(e, ExecutionFailed)]
    # Every attempt is in the log: three requests, two retryable failures between them.
    assert [r.attempt for r in requests] == [0, 1, 2]
    assert [(f.attempt, f.retryable, f.code) for f in failures] == [
        (0, True, "engine_throttled"),
        (1, True, "engine_throttled"),
    ]
    for failure, retry in zip(failures, requests[1:], strict=True):
        # The retry answers the failure, under an id derived from it (idempotent).
        assert retry.causation_id == failure.event_id
        assert retry.event_id == derived_event_id(failure.event_id, "execution.requested")
        assert retry.producer == "qbus.verify"
        # Same work as the first request: only the envelope and the attempt differ.
        assert (retry.engine, retry.circuit_hash, retry.options) == (
            requests[0].engine,
            requests[0].circuit_hash,
            requests[0].options,
        )
        # The backoff was waited out (the server hands the failure back after it).
        waited = retry.timestamp - failure.timestamp
        assert waited >= RETRIES.backoff(failure.attempt + 1) - 0.06, waited
    assert final.causation_id is not None
    assert await count_results(flaky, submitted.job_id) == 1


async def test_always_transient_fails_after_max_attempts(flaky: Bus, tmp_path: Path):
    counter = tmp_path / "runs"
    submitted = job(QASM2_BELL, engine="flaky", parameters={f"transient:{counter}": 1000})
    (final,) = await run_jobs(flaky, [submitted])
    assert isinstance(final, JobFailed), final
    # The engine's code, and a message that says how many attempts were made and why.
    assert final.code == "engine_throttled"
    assert "gave up after 3 attempts" in final.message
    assert "throttled by the provider (run 3)" in final.message
    assert _runs(counter) == 3
    events = await _log(flaky, submitted.job_id)
    assert [e.attempt for e in events if isinstance(e, ExecutionRequested)] == [0, 1, 2]
    last_failure = [e for e in events if isinstance(e, ExecutionFailed)][-1]
    assert final.causation_id == last_failure.event_id
    assert await count_results(flaky, submitted.job_id) == 1


async def test_non_retryable_failure_ends_the_job_at_once(flaky: Bus, tmp_path: Path):
    counter = tmp_path / "runs"
    submitted = job(QASM2_BELL, engine="flaky", parameters={f"fatal:{counter}": 1})
    (final,) = await run_jobs(flaky, [submitted])
    assert isinstance(final, JobFailed), final
    assert final.code == "engine_error"
    assert "the device rejected the program (run 1)" in final.message
    assert _runs(counter) == 1
    events = await _log(flaky, submitted.job_id)
    assert len([e for e in events if isinstance(e, ExecutionRequested)]) == 1
    (failure,) = [e for e in events if isinstance(e, ExecutionFailed)]
    assert not failure.retryable


def test_backoff_doubles_up_to_the_cap():
    cfg = RetriesConfig(base_delay=0.5, max_delay=3.0)
    assert [cfg.backoff(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="max_attempts"):
        RetriesConfig(max_attempts=0)
