"""PubAcks (qbus/bus/acks.py): JetStream publishes acked on one shared inbox behave as
nats-py's ``js.publish`` does, against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

from qbus.bus.acks import PubAcks
from qbus.bus.connection import EXPECTED_LAST, EXPECTED_SUBJECT, WRONG_LAST_SEQUENCE, Bus


async def test_acks_carry_the_sequence_and_the_duplicate_flag(bus: Bus):
    acks = PubAcks(bus.nc)
    subject = bus.subjects.control("acks-1")
    # Many at once, before the inbox subscription exists: one subscription, every ack
    # matched to its own message.
    sent = await asyncio.gather(
        *(acks.publish(subject, b"%d" % i, {"Nats-Msg-Id": f"acks-{i}"}) for i in range(200))
    )
    seqs = [ack.seq for ack in sent]
    assert len(set(seqs)) == 200 and all(ack.stream == bus.config.stream for ack in sent)
    for ack, i in zip(sent, range(200), strict=True):
        stored = await bus.js.get_msg(bus.config.stream, ack.seq)
        assert stored.data == b"%d" % i
    again = await acks.publish(subject, b"0", {"Nats-Msg-Id": "acks-0"})
    assert again.duplicate and again.seq == seqs[0]
    assert not sent[0].duplicate


async def test_a_refused_publish_raises_the_servers_error_with_its_code(bus: Bus):
    acks = PubAcks(bus.nc)
    await acks.publish(bus.subjects.control("acks-2"), b"x")
    guard = {EXPECTED_LAST: "0", EXPECTED_SUBJECT: bus.subjects.job_kinds("acks-2")}
    with pytest.raises(APIError) as refused:
        await acks.publish(bus.subjects.ingested("acks-2"), b"y", guard)
    assert refused.value.err_code == WRONG_LAST_SEQUENCE
    # The same guard on a fresh job id passes.
    guard[EXPECTED_SUBJECT] = bus.subjects.job_kinds("acks-3")
    assert (await acks.publish(bus.subjects.ingested("acks-3"), b"y", guard)).seq > 0


async def test_no_stream_and_no_answer_are_errors_not_hangs(bus: Bus):
    acks = PubAcks(bus.nc, timeout=0.5)
    with pytest.raises(NoStreamResponseError):
        await acks.publish("nowhere.at.all", b"x")

    # A subject someone answers with nothing that reaches the inbox: the wait ends.
    async def ignore(msg) -> None:
        return None

    await bus.nc.subscribe("silent.service", cb=ignore)
    with pytest.raises(NatsTimeout):
        await acks.publish("silent.service", b"x")
    assert not acks._waiting
