"""Transient engine failures are run again with backoff, up to ``[retries] max_attempts``.

The engine is ``flaky`` (tests/flaky_engine.py): the reference engine, failing on the
runs its request's markers ask for and counting every run in a file, so the number of
runs is read from disk, not from the code under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import Config, RetriesConfig
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of, has_final
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.retry import RetryPolicy, find_request
from qbus.engines import registry
from qbus.errors import Retry
from qbus.schemas.events import (
    Event,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    derived_event_id,
    new_event_id,
)
from qbus.schemas.ir import circuit_hash
from qbus.verifier.log_audit import verify_log
from tests.jobs import QASM2_BELL, count_results, job, run_jobs
from tests.samples import BELL, OPTS

pytestmark = pytest.mark.timeout(120)

RETRIES = RetriesConfig(max_attempts=3, base_delay=0.3, max_delay=1.0)


@pytest.fixture
async def flaky(config: Config, bus: Bus, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bus]:
    """Stages up to verify, with executors for the flaky and hostile test engines."""
    monkeypatch.setitem(registry.BUILTIN_ENGINES, "flaky", "tests.flaky_engine:FlakyEngine")
    monkeypatch.setitem(registry.BUILTIN_ENGINES, "hostile", "tests.hostile_engine:HostileEngine")
    cfg = msgspec.structs.replace(config, retries=RETRIES)
    stages = ("ingest", "rewrite", "route", "execute", "verify")
    async with Pipeline(cfg, stages=stages, engines=("flaky", "hostile")) as pipeline:
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
        assert retry.event_id == derived_event_id(
            failure.event_id, "execution.requested", job_id=failure.job_id
        )
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
    assert await count_results(flaky, submitted.job_id) == 1
    # The audit's checks accept the retries: each answers an event of the log, and the
    # result re-derives from the request it answers.
    report = await verify_log(flaky)
    assert report.problems == [], report.problems


async def test_each_attempt_is_validated_exactly_once(flaky: Bus, tmp_path: Path):
    # Through the real executor: the engine's run validates, the executor does not
    # validate again, so one validation per run attempt, none skipped.
    runs, validations = tmp_path / "runs", tmp_path / "validations"
    parameters = {f"transient:{runs}": 1, f"validations:{validations}": 0}
    submitted = job(QASM2_BELL, engine="flaky", shots=100, parameters=parameters)
    (final,) = await run_jobs(flaky, [submitted])
    assert isinstance(final, JobCompleted), final
    assert _runs(runs) == 2
    assert _runs(validations) == 2


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


async def test_an_engine_panic_fails_the_job_at_once_and_the_executor_goes_on(flaky: Bus):
    # A BaseException from the engine's library (a Rust panic through PyO3) used to end
    # the executor: the job was redelivered until it was dead-lettered.
    panicking = job(QASM2_BELL, engine="hostile", hypervisor="inline", parameters={"panic": 1})
    (final,) = await run_jobs(flaky, [panicking])
    assert isinstance(final, JobFailed), final
    assert final.code == "engine_crashed"
    assert "Panic: index out of bounds" in final.message
    failures = [e for e in await _log(flaky, panicking.job_id) if isinstance(e, ExecutionFailed)]
    assert [(f.code, f.retryable) for f in failures] == [("engine_crashed", False)]
    (after,) = await run_jobs(flaky, [job(QASM2_BELL, engine="hostile", hypervisor="inline")])
    assert isinstance(after, JobCompleted), after


async def test_sandbox_worker_crash_is_retried_then_fails_with_its_code(flaky: Bus):
    # The engine code SIGKILLs its sandbox worker on every run: a crash, not a limit.
    submitted = job(
        QASM2_BELL, engine="hostile", hypervisor="process", parameters={"kill_parent": 1.0}
    )
    (final,) = await run_jobs(flaky, [submitted])
    assert isinstance(final, JobFailed), final
    assert final.code == "worker_died"
    assert "gave up after 3 attempts" in final.message
    events = await _log(flaky, submitted.job_id)
    failures = [e for e in events if isinstance(e, ExecutionFailed)]
    assert [(f.attempt, f.code, f.retryable) for f in failures] == [
        (k, "worker_died", True) for k in range(3)
    ]


async def test_policy_reads_the_request_back_and_skips_ended_jobs(bus: Bus):
    """The policy against the real log: the wait, the request it re-issues, and no retry
    for a job that ended (a cancel, say) while it waited."""
    policy = RetryPolicy(RETRIES, partial(find_request, bus), partial(has_final, bus))
    request = ExecutionRequested(
        event_id=new_event_id(),
        job_id="ended-while-waiting",
        engine="flaky",
        circuit=BELL,
        circuit_hash=circuit_hash(BELL),
        options=msgspec.structs.replace(OPTS, priority="high"),
    )
    await bus.publish(request)
    failed = ExecutionFailed(
        event_id=new_event_id(),
        job_id=request.job_id,
        causation_id=request.event_id,
        engine="flaky",
        code="engine_throttled",
        message="throttled",
        retryable=True,
    )
    # Just failed: the handler asks to see the failure again when the backoff is over.
    with pytest.raises(Retry) as waiting:
        await policy.on_failure(failed)
    assert 0 < waiting.value.delay <= RETRIES.backoff(1)
    # Backoff over: the same request (found on its priority subject), attempt 1.
    later = msgspec.structs.replace(failed, timestamp=failed.timestamp - 10)
    (again,) = await policy.on_failure(later)
    assert isinstance(again, ExecutionRequested)
    assert (again.attempt, again.causation_id) == (1, failed.event_id)
    assert (again.circuit, again.options) == (request.circuit, request.options)
    # The job ends meanwhile: nothing more is asked for.
    await bus.publish(
        JobFailed(event_id=new_event_id(), job_id=request.job_id, code="cancelled", message="x")
    )
    assert await policy.on_failure(later) == []


def test_backoff_doubles_up_to_the_cap():
    cfg = RetriesConfig(base_delay=0.5, max_delay=3.0)
    assert [cfg.backoff(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="max_attempts"):
        RetriesConfig(max_attempts=0)
