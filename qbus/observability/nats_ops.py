"""Count the NATS operations a process sends, by connection and kind: the bus's cost in ops.

Every message a nats-py client sends goes through ``Client.publish`` (a request is a
publish with a reply subject; a JetStream publish, a KV put or get, an ack are all
publishes to particular subjects). ``count_operations`` wraps that one method for as
long as it is active and classifies each call by its subject, so a test or a benchmark
can say how many publishes, KV writes, reads and acks one job costs in each stage —
counts, which do not depend on how fast the machine is (docs/architecture.md,
"Operations per job").

For tests and benchmarks only: it patches the client class process-wide.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from nats.aio.client import Client

__all__ = ["OPERATION_KINDS", "OperationCounts", "classify", "count_operations"]

OPERATION_KINDS = (
    "publish",  # an event stored in a stream, waiting for its PubAck
    "kv_put",  # a key-value write (a JetStream publish to $KV.<bucket>.<key>)
    "read",  # a KV get, a direct or stream message get: a round trip for data
    "api",  # any other JetStream API request (consumer/stream info, list, create…)
    "object",  # object-store chunk and metadata writes
    "ack",  # +ACK / -NAK / +TERM / +WPI on a delivered message (no round trip)
    "pull",  # a pull request for more messages (amortised over a batch)
    "core",  # a plain NATS publish with no reply and no stream (not a round trip)
)


def classify(subject: str, payload: bytes, reply: str) -> str:
    """The kind (one of ``OPERATION_KINDS``) of one outgoing message."""
    if subject.startswith("$JS.ACK."):
        return "ack"
    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return "pull"
    if subject.startswith(("$JS.API.DIRECT.GET.", "$JS.API.STREAM.MSG.GET.")):
        return "read"
    if subject.startswith("$JS.API."):
        return "api"
    if subject.startswith("$KV."):
        return "kv_put"
    if subject.startswith("$O."):
        return "object"
    if reply:
        return "publish"
    return "core"


class OperationCounts:
    """Counts per (connection name, kind), filled while ``count_operations`` is active."""

    def __init__(self) -> None:
        self.by_connection: dict[str, Counter[str]] = {}

    def add(self, connection: str, kind: str) -> None:
        self.by_connection.setdefault(connection, Counter())[kind] += 1

    def of(self, connection: str) -> Counter[str]:
        """The counts of one connection (empty when it sent nothing)."""
        return self.by_connection.get(connection, Counter())

    def per_job(self, jobs: int) -> dict[str, dict[str, float]]:
        """Counts divided by ``jobs``, per connection and kind."""
        return {
            name: {kind: counts[kind] / jobs for kind in OPERATION_KINDS}
            for name, counts in sorted(self.by_connection.items())
        }


@contextlib.contextmanager
def count_operations() -> Iterator[OperationCounts]:
    """Count every message this process's nats-py clients send, until the block ends.

    Connections are told apart by their ``name`` option (qbus names each stage's
    connection ``qbus-<stage>``).
    """
    counts = OperationCounts()
    original = Client.publish

    async def counted(
        self: Client,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, Any] | None = None,
    ) -> None:
        counts.add(str(self.options.get("name") or "?"), classify(subject, payload, reply))
        await original(self, subject, payload, reply, headers)

    Client.publish = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Client.publish = original  # type: ignore[method-assign]
