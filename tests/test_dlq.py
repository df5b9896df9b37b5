"""Dead letters: a message a stage gives up on lands on ``qbus.dlq.<stage>.<job>`` with the
reason, its job ends with exactly one JobFailed(dead_lettered), and ``qbus dlq`` lists,
shows and replays it.

The stages here run a deliberately broken handler on the submit subject, on a real
nats-server with a short ack wait and few deliveries.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest

from qbus.bus.config import BusConfig, RetriesConfig
from qbus.bus.connection import Bus
from qbus.bus.deadletter import DEAD_LETTERED, REPLAY_HEADER, dead_letters
from qbus.bus.job_log import events_of
from qbus.bus.runner import StageRunner
from qbus.bus.server import NatsServer
from qbus.errors import Fail
from qbus.producers.submit import wait_final
from qbus.schemas.events import DeadLetter, Event, JobFailed, decode
from qbus.verifier.log_audit import verify_log
from tests.crashing_stage import HANDLED, STAGE
from tests.jobs import QASM2_BELL, count_results, job

pytestmark = pytest.mark.timeout(120)

MAX_DELIVER = 3


class Fragile:
    """A stage whose handler raises on every message: a bug that no retry fixes."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def handle(self, event: Event) -> Sequence[Event]:
        self.calls[event.event_id] += 1
        raise RuntimeError(f"boom on {event.job_id}")


class Hung:
    """A stage whose handler never finishes (until released): no outcome at all."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def handle(self, event: Event) -> Sequence[Event]:
        self.calls += 1
        await self.release.wait()
        return []


@pytest.fixture
async def dlq_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    config = BusConfig(
        url=nats_server.url, ack_wait=1.0, max_deliver=MAX_DELIVER, duplicate_window=60
    )
    bus = await Bus.connect(config)
    await bus.provision()
    yield bus
    await bus.close()


async def _running(
    bus: Bus, stage: str, handler, grace: float = 0.5
) -> tuple[StageRunner, asyncio.Task]:
    runner = StageRunner(
        bus,
        stage=stage,
        durable=stage,
        subjects=[bus.subjects.submit],
        handler=handler,
        # A short grace: the hung handler below is known never to finish.
        retries=RetriesConfig(redeliver_delay=0.1, dead_letter_grace=grace),
        consumer_poll=0,
    )
    return runner, asyncio.create_task(runner.run())


async def _stop(runner: StageRunner, task: asyncio.Task) -> None:
    runner.stop()
    await asyncio.wait_for(task, 10)


async def _letters(bus: Bus, n: int, timeout: float = 20.0) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [dl for _, dl in await dead_letters(bus)]
        if len(found) >= n:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {n} dead letters after {timeout} s")


def qbus(url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "qbus", "--url", url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


async def test_handler_that_always_raises_is_dead_lettered_listed_and_replayed(dlq_bus: Bus):
    bus = dlq_bus
    handler = Fragile()
    runner, task = await _running(bus, "fragile", handler)
    try:
        submitted = job(QASM2_BELL)
        seq = await bus.publish(submitted)
        final = await wait_final(bus, submitted.job_id, 30)
        assert isinstance(final, JobFailed), final
        assert final.code == DEAD_LETTERED
        assert handler.calls[submitted.event_id] == MAX_DELIVER

        (letter,) = await _letters(bus, 1)
        assert letter.job_id == submitted.job_id
        assert letter.causation_id == submitted.event_id
        assert (letter.stage, letter.consumer, letter.stream) == ("fragile", "fragile", "QBUS")
        assert (letter.subject, letter.stream_seq) == (bus.subjects.submit, seq)
        assert letter.deliveries == MAX_DELIVER
        assert letter.cause == "handler_error"
        assert letter.original_type == "job.submitted"
        assert f"RuntimeError: boom on {submitted.job_id}" in letter.reason
        # The job's one end names the dead letter and why.
        assert final.causation_id == letter.event_id
        assert "boom on" in final.message and letter.event_id in final.message
        # The dead letter was stored before the job's end, on its own subject.
        log = [(s, subject, e) async for s, subject, e in events_of(bus, submitted.job_id)]
        letter_seq = next(s for s, _, e in log if isinstance(e, DeadLetter))
        final_seq = next(s for s, _, e in log if isinstance(e, JobFailed))
        assert letter_seq < final_seq
        assert bus.subjects.dlq("fragile", submitted.job_id) in {subj for _, subj, _ in log}

        url = bus.config.url
        listed = await asyncio.to_thread(qbus, url, "dlq", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert row["event_id"] == letter.event_id and row["reason"] == letter.reason
        table = await asyncio.to_thread(qbus, url, "dlq")
        assert table.returncode == 0, table.stderr
        assert letter.event_id[:8] in table.stdout and submitted.job_id in table.stdout
        assert "fragile" in table.stdout and "RuntimeError" in table.stdout

        shown = await asyncio.to_thread(qbus, url, "dlq", "show", letter.event_id[:8], "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["message"]["sequence"] == seq
        assert decode(doc["message"]["payload"].encode()) == submitted

        replayed = await asyncio.to_thread(qbus, url, "dlq", "replay", letter.event_id[:8])
        assert replayed.returncode == 0, replayed.stderr
        # The copy reaches the stage under a fresh id, fails the same way, and becomes a
        # second dead letter; the job keeps its one final event.
        first, second = await _letters(bus, 2)
        assert first == letter
        assert second.subject == bus.subjects.submit and second.stream_seq > seq
        assert second.causation_id != submitted.event_id
        assert handler.calls[second.causation_id] == MAX_DELIVER
        copy = await bus.js.get_msg(bus.config.stream, second.stream_seq)
        assert copy.headers[REPLAY_HEADER] == letter.event_id
        assert copy.headers["Nats-Msg-Id"] == second.causation_id
        assert decode(copy.data).job_id == submitted.job_id
        assert await count_results(bus, submitted.job_id) == 1
        # Dead letters, their job ends and the replayed copy are all well-formed events.
        report = await verify_log(bus)
        assert report.problems == [], report.problems

        missing = await asyncio.to_thread(qbus, url, "dlq", "show", "nonexistent")
        assert missing.returncode != 0 and "no dead letter" in missing.stderr
    finally:
        await _stop(runner, task)


async def test_handler_that_never_finishes_is_dead_lettered_from_the_advisory(dlq_bus: Bus):
    bus = dlq_bus
    handler = Hung()
    runner, task = await _running(bus, "hung", handler)
    try:
        submitted = job(QASM2_BELL)
        seq = await bus.publish(submitted)
        # The server redelivers after each ack wait, then gives up and says so.
        final = await wait_final(bus, submitted.job_id, 30)
        assert isinstance(final, JobFailed), final
        assert final.code == DEAD_LETTERED
        (letter,) = await _letters(bus, 1)
        assert (letter.stage, letter.consumer, letter.stream_seq) == ("hung", "hung", seq)
        assert letter.cause == "max_deliveries"
        assert letter.deliveries == MAX_DELIVER
        assert "no outcome within ack_wait" in letter.reason
        assert final.causation_id == letter.event_id
        assert handler.calls == 1  # still stuck in the first delivery
    finally:
        handler.release.set()
        await _stop(runner, task)
    assert await count_results(bus, submitted.job_id) == 1


class Late:
    """A stage whose first run outlasts every delivery's ack wait, then ends the job."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def handle(self, event: Event) -> Sequence[Event]:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self.seconds)
        raise Fail("finished late", code="done_late")


async def test_message_finished_within_the_grace_is_not_dead_lettered(dlq_bus: Bus):
    bus = dlq_bus
    # The server gives up after MAX_DELIVER ack waits (1 s each); the handler is done at
    # 1.5 ack waits past that, well inside the 4 s grace.
    handler = Late(seconds=MAX_DELIVER * bus.config.ack_wait + 1.5)
    runner, task = await _running(bus, "late", handler, grace=4.0)
    try:
        submitted = job(QASM2_BELL)
        await bus.publish(submitted)
        final = await wait_final(bus, submitted.job_id, 30)
        assert isinstance(final, JobFailed) and final.code == "done_late", final

        async def advisory_handled() -> bool:
            info = await bus.js.consumer_info(bus.config.advisory_stream, "dlq-late")
            return (
                info.num_pending == 0
                and info.num_ack_pending == 0
                and info.delivered.stream_seq >= 1
            )

        deadline = time.monotonic() + 20
        while not await advisory_handled():
            assert time.monotonic() < deadline, "the advisory was never handled"
            await asyncio.sleep(0.1)
        # The server did give up (there was an advisory), but the message was settled.
        advisories = await bus.js.stream_info(bus.config.advisory_stream)
        assert advisories.state.messages == 1
        assert await dead_letters(bus) == []
        assert await count_results(bus, submitted.job_id) == 1
    finally:
        await _stop(runner, task)


async def test_a_message_that_kills_its_stage_and_its_batch_mate_are_both_dead_lettered(
    dlq_bus: Bus,
):
    """A submission that segfaults the stage process takes its batch-mate down with it on
    every delivery; both must end with a dead letter even after later traffic is acked
    (which moves the consumer's ack floor past them)."""
    bus = dlq_bus
    poison = job(QASM2_BELL, labels={"crash": "segv"})
    mate = job(QASM2_BELL)  # valid; only unlucky to share the poison's batch
    await bus.publish(poison)
    mate_seq = await bus.publish(mate)
    args = [
        "-m",
        "tests.crashing_stage",
        bus.config.url,
        str(bus.config.ack_wait),
        str(MAX_DELIVER),
    ]
    # Each start fetches [poison, mate] (redelivered after the ack wait: a start takes
    # longer) and dies on the poison before the mate's outcome is stored.
    for _ in range(MAX_DELIVER):
        dying = await asyncio.create_subprocess_exec(sys.executable, *args, "60")
        assert await asyncio.wait_for(dying.wait(), 60) == -signal.SIGSEGV
    # A copy that lives, with a grace long enough that a later job is acked first.
    survivor = await asyncio.create_subprocess_exec(sys.executable, *args, "3")
    try:
        # The server gives up on both when the last ack wait runs out, and says so.
        deadline = time.monotonic() + 30
        while (await bus.js.stream_info(bus.config.advisory_stream)).state.messages < 2:
            assert time.monotonic() < deadline, "the server never gave up on the messages"
            await asyncio.sleep(0.1)
        later = job(QASM2_BELL)
        await bus.publish(later)
        final = await wait_final(bus, later.job_id, 30)
        assert isinstance(final, JobFailed) and final.code == HANDLED, final
        # The server moves the ack floor past both (what the old check took for "acked").
        while (
            await bus.js.consumer_info(bus.config.stream, STAGE)
        ).ack_floor.stream_seq <= mate_seq:
            assert time.monotonic() < deadline, "the ack floor never passed the lost messages"
            await asyncio.sleep(0.05)

        for lost in (poison, mate):
            final = await wait_final(bus, lost.job_id, 30)
            assert isinstance(final, JobFailed) and final.code == DEAD_LETTERED, final
        letters = await _letters(bus, 2)
        assert sorted(dl.job_id for dl in letters) == sorted([poison.job_id, mate.job_id])
        assert all(dl.cause == "max_deliveries" for dl in letters)
        assert all(dl.deliveries == MAX_DELIVER for dl in letters)
        for submitted in (poison, mate, later):
            assert await count_results(bus, submitted.job_id) == 1
    finally:
        survivor.terminate()
        await survivor.wait()
