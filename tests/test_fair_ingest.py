"""Fair ingest (issue 17, defect 6): one sender's flood does not hold up another's job.

Counts, not timings: with the whole flood and then a valid job waiting in the log, ingest
must answer the valid job within its first batches, not after the flood.
"""

from __future__ import annotations

import json

import pytest
from nats.js import api as js_api

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.fair import SenderLanes
from qbus.consumers.pipeline import Pipeline
from qbus.producers.submit import wait_final
from qbus.schemas.events import JobCompleted, encode
from tests.jobs import QASM2_BELL, job

pytestmark = pytest.mark.timeout(240)

FLOOD = 2000
BATCH = 64  # ingest's batch (qbus/consumers/stages.py)


class _Msg:
    def __init__(self, subject: str, n: int) -> None:
        self.subject, self.data, self.n = subject, b"x" * n, n


def test_lanes_take_an_equal_share_from_each_sender_in_arrival_order():
    lanes = SenderLanes(lambda msg: msg.subject)
    lanes.add([_Msg("a", i) for i in range(100)] + [_Msg("b", 1000 + i) for i in range(3)])
    assert lanes.count == 103 and lanes.senders() == 2
    first = lanes.take(10)
    # Five each would be the share; b has only three, so a fills nothing more this round.
    assert [m.n for m in first] == [0, 1, 2, 3, 4, 1000, 1001, 1002]
    assert lanes.senders() == 1
    lanes.add([_Msg("c", 2000)])
    second = lanes.take(10)
    assert [m.n for m in second] == [5, 6, 7, 8, 9, 2000]
    assert lanes.count == 90 and lanes.bytes == sum(range(10, 100))
    assert len(lanes.drain()) == 90 and not lanes
    # More senders than a batch takes: one each from the first, the rest first next time.
    lanes.add([_Msg(sender, 3000 + i) for i, sender in enumerate("defgh")] + [_Msg("d", 1)])
    assert [m.n for m in lanes.take(3)] == [3000, 3001, 3002]
    assert [m.n for m in lanes.take(3)] == [3003, 3004, 1]


async def test_a_valid_job_is_answered_before_another_senders_flood(config: Config, bus: Bus):
    # The flood and then the job wait in the log before ingest starts: served in order,
    # the job would be answered after all 2,000 bad inputs.
    flooder = bus.subjects.submit_for("flooder")
    for i in range(FLOOD):
        bad = {"type": "job.submitted", "job_id": f"f{i}", "event_id": f"f{i}", "shots": "x"}
        await bus.js.publish(flooder, json.dumps(bad).encode(), headers={"Nats-Msg-Id": f"m{i}"})
    canary = job(QASM2_BELL, shots=20)
    await bus.js.publish(bus.subjects.submit, encode(canary))
    async with Pipeline(config) as pipeline:
        final = await wait_final(bus, canary.job_id, timeout=120)
        ingested = (
            await bus.js.get_last_msg(bus.config.stream, bus.subjects.ingested(canary.job_id))
        ).seq
        answered_before = await _flood_answers_before(bus, ingested)
        pipeline.check()
    assert isinstance(final, JobCompleted), final
    # At most the batch in progress and the flood's share of the canary's batch.
    assert answered_before <= 2 * BATCH, answered_before


async def _flood_answers_before(bus: Bus, seq: int) -> int:
    """Answers to the flood (rejections on result subjects) stored before ``seq``."""
    sub = await bus.js.subscribe(
        bus.subjects.result(),
        stream=bus.config.stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    count = 0
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            if msg.metadata.sequence.stream > seq:
                return count
            count += msg.subject.split(".")[-1].startswith("f")
    finally:
        await sub.unsubscribe()
