"""Reading one key of a JetStream key-value bucket, the way every qbus bucket is read.

A key that was never written raises ``KeyNotFoundError`` in nats-py; a deleted or purged
key comes back as an entry with no value. Both mean "nothing there" to qbus.
"""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue


async def read_entry(kv: KeyValue, key: str) -> tuple[bytes | None, int | None]:
    """``key``'s value and revision; (None, None) when it is absent, deleted or empty."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, None
    if not entry.value:
        return None, None
    return entry.value, entry.revision


async def read_value(kv: KeyValue, key: str) -> bytes | None:
    """``key``'s value; None when it is absent, deleted or empty."""
    value, _ = await read_entry(kv, key)
    return value
