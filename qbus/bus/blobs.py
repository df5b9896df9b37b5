"""Large results (state vectors) in the JetStream object store, referenced from events."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from qbus.bus.connection import Bus


class BlobStore(Protocol):
    """Where a stage puts results too large for an event."""

    async def put(self, name: str, data: bytes) -> str: ...

    async def get(self, ref: str) -> bytes: ...


class ObjectStoreBlobs:
    """A BlobStore on the bus's object store; refs look like ``obj://<bucket>/<name>``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.bucket = bus.config.object_store

    async def put(self, name: str, data: bytes) -> str:
        store = await self.bus.js.object_store(self.bucket)
        await store.put(name, data)
        return f"obj://{self.bucket}/{name}"

    async def get(self, ref: str) -> bytes:
        prefix = f"obj://{self.bucket}/"
        if not ref.startswith(prefix):
            raise ValueError(f"not a ref into {self.bucket}: {ref}")
        store = await self.bus.js.object_store(self.bucket)
        result = await store.get(ref[len(prefix) :])
        return result.data or b""


def statevector_bytes(vector: np.ndarray) -> bytes:
    """complex128 little-endian bytes: the object-store format of a state vector."""
    return np.ascontiguousarray(vector, dtype="<c16").tobytes()


def statevector_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<c16")


def interleave(vector: np.ndarray) -> list[float]:
    """[re0, im0, re1, im1, …]: a state vector as JSON numbers."""
    return np.ascontiguousarray(vector, dtype=np.complex128).view(np.float64).tolist()


def deinterleave(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.complex128)
