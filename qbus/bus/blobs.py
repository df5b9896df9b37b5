"""Large results (state vectors) in the JetStream object store, referenced from events.

The store has a TTL and a quota (``[bus] results_ttl``, ``results_max_bytes``); a result
that would not fit is refused whole (``result_store_full``) before any of it is written.
A result is streamed into the store from its buffer, chunk by chunk, never copied whole.
"""

from __future__ import annotations

import io
from typing import Protocol

import numpy as np
from nats.js.errors import APIError
from nats.js.object_store import ObjectStore

from qbus.bus.connection import Bus
from qbus.errors import QbusError

MAX_BYTES_EXCEEDED = 10_077
"""JetStream's error code for a message refused by the stream's ``max_bytes``."""
STORE_OVERHEAD = 4096
"""Bytes the store adds to an object beyond its data, for its meta message; the quota
check adds ``size // 1024`` for its chunks' subjects and headers (~100 B per 128 KiB)."""


class ResultStoreFull(QbusError):
    """A result does not fit the object store's quota; the job fails with this code."""

    code = "result_store_full"


class BlobStore(Protocol):
    """Where a stage puts results too large for an event."""

    async def put(self, name: str, data: bytes | memoryview) -> str: ...

    async def get(self, ref: str) -> bytes: ...


class ObjectStoreBlobs:
    """A BlobStore on the bus's object store; refs look like ``obj://<bucket>/<name>``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.bucket = bus.config.object_store

    async def put(self, name: str, data: bytes | memoryview) -> str:
        """Store ``data`` as ``name``, streamed from its buffer.

        Raises:
            ResultStoreFull: The store's quota cannot take it (nothing is left stored).
        """
        view = memoryview(data).cast("B")
        store = await self.bus.js.object_store(self.bucket)
        await self._check_room(store, name, len(view))
        try:
            await store.put(name, _BufferReader(view))
        except APIError as exc:
            # Another writer filled the store since the check: nats-py has purged the
            # chunks already written.
            if exc.err_code != MAX_BYTES_EXCEEDED:
                raise
            raise ResultStoreFull(f"{name}: the result store filled up while writing it") from exc
        return f"obj://{self.bucket}/{name}"

    async def _check_room(self, store: ObjectStore, name: str, size: int) -> None:
        info = (await store.status()).stream_info
        quota = info.config.max_bytes or -1
        used = info.state.bytes or 0
        if 0 <= quota < used + size + STORE_OVERHEAD + size // 1024:
            mib = 2**20
            raise ResultStoreFull(
                f"{name}: the result ({size / mib:,.1f} MiB) does not fit the result store "
                f"({used / mib:,.1f} of its {quota / mib:,.1f} MiB quota in use); stored "
                "results expire after [bus] results_ttl, the quota is results_max_bytes"
            )

    async def get(self, ref: str) -> bytes:
        prefix = f"obj://{self.bucket}/"
        if not ref.startswith(prefix):
            raise ValueError(f"not a ref into {self.bucket}: {ref}")
        store = await self.bus.js.object_store(self.bucket)
        result = await store.get(ref[len(prefix) :])
        return result.data or b""


class _BufferReader(io.RawIOBase):
    """A buffer read as a file, in place: nats-py's object store streams a reader."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._view) - self._at)
        buffer[:n] = self._view[self._at : self._at + n]
        self._at += n
        return n


def statevector_buffer(vector: np.ndarray) -> memoryview:
    """complex128 little-endian bytes, the object-store format of a state vector, as a
    view of the vector itself when it is already contiguous ``<c16`` (no 16 B x 2^n copy)."""
    return memoryview(np.ascontiguousarray(vector, dtype="<c16").reshape(-1).view(np.uint8))


def statevector_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<c16")


def interleave(vector: np.ndarray) -> list[float]:
    """[re0, im0, re1, im1, …]: a state vector as JSON numbers."""
    return np.ascontiguousarray(vector, dtype=np.complex128).view(np.float64).tolist()


def deinterleave(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.complex128)
