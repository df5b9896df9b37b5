"""The gateway's shared reader of final events (qbus/gateway/hub.py) on a real bus: every
client gets every final event once, in log order; a client that falls too far behind has
its stream ended and loses nothing when it resumes from its last id."""

from __future__ import annotations

import asyncio

import pytest

from qbus.bus.connection import Bus
from qbus.gateway import hub as hub_module
from qbus.gateway.auth import ANYONE, Caller
from qbus.gateway.hub import ResultHub, client_messages
from qbus.schemas.events import JobRejected, new_event_id, new_job_id

pytestmark = pytest.mark.timeout(60)


def rejected(tenant: str = "") -> JobRejected:
    return JobRejected(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="test",
        code="invalid_schema",
        message="a final event for the test",
        stage="ingest",
        tenant=tenant,
    )


async def take(messages, n: int) -> list:
    return [await asyncio.wait_for(anext(messages), 10) for _ in range(n)]


async def test_clients_share_one_reader_and_each_gets_every_event_once(bus: Bus):
    hub = ResultHub(bus)
    first, second = await hub.join(), await hub.join()
    a = client_messages(hub, first, bus, ANYONE, None)
    b = client_messages(hub, second, bus, Caller(tenant="acme"), None)
    events = [rejected("acme"), rejected("globex"), rejected("acme")]
    sequences = [await bus.publish(e) for e in events]
    got_a = await take(a, 3)
    got_b = await take(b, 2)
    assert [m.sequence for m in got_a] == sequences
    assert [m.sequence for m in got_b] == [sequences[0], sequences[2]]  # acme's only
    assert all(m.type == "job.rejected" for m in got_a)
    await a.aclose()
    await b.aclose()
    assert hub._reader is None  # the last client gone: the hub's consumer is stopped


async def test_a_client_too_far_behind_is_ended_and_resumes_without_loss(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 3)
    hub = ResultHub(bus)
    slow_queue = await hub.join()
    slow = client_messages(hub, slow_queue, bus, ANYONE, None)
    sequences = [await bus.publish(rejected()) for _ in range(8)]
    # It read nothing while 8 arrived: its queue overflowed and its stream ends.
    seen = []
    async for message in slow:
        seen.append(message.sequence)
    assert seen == sequences[: len(seen)] and len(seen) < len(sequences)
    # It resumes after the last id it got (as an EventSource does), from the log.
    after = seen[-1] if seen else sequences[0] - 1
    resumed = client_messages(hub, await hub.join(), bus, ANYONE, after)
    rest = await take(resumed, len(sequences) - len(seen))
    assert seen + [m.sequence for m in rest] == sequences
    late = await bus.publish(rejected())  # and goes on live
    assert (await take(resumed, 1))[0].sequence == late
    await resumed.aclose()
