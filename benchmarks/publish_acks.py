"""Stored-event publish cost: nats-py's ``js.publish`` against qbus's ``PubAcks``.

Every stage stores its events through ``Bus.publish_async`` (bus/acks.py). This starts
a nats-server, then publishes ``--messages`` 200-byte messages with a ``Nats-Msg-Id``,
all in flight at once as a stage's batch does, alternating the two ways ``--repeats``
times, and prints µs per message and the ratio PubAcks / js.publish.

    python benchmarks/publish_acks.py --messages 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

from qbus.bus.acks import PubAcks
from qbus.bus.server import NatsServer


async def timed(publish, n: int, tag: str) -> float:
    """Seconds per message for ``n`` publishes in flight at once."""
    start = time.perf_counter()
    await asyncio.gather(
        *(publish(f"bench.{tag}", b"x" * 200, {"Nats-Msg-Id": f"{tag}-{i}"}) for i in range(n))
    )
    return (time.perf_counter() - start) / n


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="qbus-acks-") as tmp, NatsServer(Path(tmp)) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"])
        acks = PubAcks(nc)

        async def plain(subject: str, payload: bytes, headers: dict[str, str]):
            return await js.publish(subject, payload, headers=headers)

        ours, theirs = [], []
        for r in range(args.repeats):
            theirs.append(await timed(plain, args.messages, f"js{r}"))
            ours.append(await timed(acks.publish, args.messages, f"acks{r}"))
        await nc.close()
    js_us, acks_us = statistics.median(theirs) * 1e6, statistics.median(ours) * 1e6
    print(
        f"qbus publish acks: {args.messages} messages in flight, {args.repeats} repeats "
        f"(load average {os.getloadavg()[0]:.2f})"
    )
    print(f"js.publish: {js_us:.1f} us/message (median)")
    print(f"PubAcks: {acks_us:.1f} us/message (median)")
    print(f"ratio PubAcks / js.publish: {acks_us / js_us:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
