"""The chunk ledger of long jobs, and compare-and-set access to the job-state KV.

A KV bucket (``<stream>_CHUNKS``, created on first use) holds, per chunked job:

* ``<job>`` → ``Ledger``: chunk count, current generation and engine, status, and which
  chunks have an accepted result (from which engine and generation);
* ``<job>.c<k>.g<gen>`` → ``ChunkResult``: chunk ``k``'s points (a sweep) or counts (a
  shot chunk) as run in generation ``gen``, read back when the last chunk is in.

Every ledger change is a compare-and-set on the key's revision, so the assembler (which
accepts a chunk result) and the control stage (which bumps the generation on a reroute,
or marks the job cancelled) serialise on one key: a chunk is either accepted before the
bump (and not republished) or its result is of an older generation (and dropped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from qbus.bus.jobstate import JobState, decode_state
from qbus.bus.kv import read_entry
from qbus.schemas.sweep import SweepPoint

log = logging.getLogger("qbus.ledger")

DEFAULT_CHUNKS_TTL = 30 * 86_400.0
"""The chunk bucket's TTL when nothing configures it (``ChunksConfig.ttl_days``)."""


def chunks_bucket_config(bucket: str, ttl: float) -> js_api.KeyValueConfig:
    """The chunk bucket: one value per key, on disk, entries dropped ``ttl`` seconds
    after their last write (0: never)."""
    return js_api.KeyValueConfig(
        bucket=bucket,
        history=1,
        ttl=ttl or None,
        storage=js_api.StorageType.FILE,
        description="qbus long jobs: chunk ledgers and chunk results",
    )


_WRONG_LAST_SEQUENCE = 10071
CAS_ATTEMPTS = 64


class ChunkDone(msgspec.Struct, frozen=True, kw_only=True):
    """The accepted result of one chunk (``shots``: a shot chunk's shots, else 0)."""

    engine: str
    generation: int
    event_id: str
    shots: int = 0


class Ledger(msgspec.Struct, frozen=True, kw_only=True):
    """A chunked job's progress.

    Attributes:
        chunks: How many chunks the job has (0: not known, e.g. a cancel came first).
        generation: The job's current generation; results of older ones are dropped.
        engine: The engine the unfinished chunks are routed to.
        status: ``running``, ``cancelled``, ``failed`` or ``completed``.
        done: Chunk index (as a string) → its accepted result.
        reroute_id: The last Reroute applied (a redelivered one is not applied twice).
        updated: Unix time of the last change.
    """

    chunks: int
    generation: int = 0
    engine: str = ""
    status: str = "running"
    done: dict[str, ChunkDone] = {}
    reroute_id: str = ""
    updated: float = 0.0

    def unfinished(self) -> list[int]:
        """Chunks without an accepted result, in order."""
        return [k for k in range(self.chunks) if str(k) not in self.done]

    @property
    def complete(self) -> bool:
        """Every chunk has an accepted result."""
        return self.chunks > 0 and len(self.done) >= self.chunks


class ChunkResult(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk's points and results (a sweep) or shots and counts (a shot chunk) as
    one engine ran them."""

    engine: str
    engine_version: str
    generation: int
    event_id: str
    seed: int
    run_seconds: float
    sweep: list[dict[str, float]] = []
    sweep_results: list[SweepPoint] = []
    shots: int = 0
    counts: dict[str, int] | None = None


_encoder = msgspec.json.Encoder()
_ledger_decoder = msgspec.json.Decoder(Ledger)
_result_decoder = msgspec.json.Decoder(ChunkResult)


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, KeyWrongLastSequenceError) or (
        isinstance(exc, APIError) and exc.err_code == _WRONG_LAST_SEQUENCE
    )


class LedgerStore:
    """The chunk bucket.

    Args:
        js: JetStream context.
        bucket: Bucket name (``BusConfig.kv_chunks``).
        ttl: Seconds an entry lives after its last write, when this store creates the
            bucket (``Bus.provision`` normally has: ``[chunks] ttl_days``).
    """

    def __init__(self, js: JetStreamContext, bucket: str, ttl: float = DEFAULT_CHUNKS_TTL) -> None:
        self.js = js
        self.bucket = bucket
        self.ttl = ttl
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The bucket, created on first use."""
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(
                    chunks_bucket_config(self.bucket, self.ttl)
                )
        return self._kv

    async def read(self, job_id: str) -> tuple[Ledger | None, int | None]:
        """A job's ledger and its revision (None, None when there is none)."""
        value, revision = await read_entry(await self.kv(), job_id)
        return (None, None) if value is None else (_ledger_decoder.decode(value), revision)

    async def change(
        self, job_id: str, fn: Callable[[Ledger | None], Ledger | None]
    ) -> tuple[Ledger | None, Ledger | None]:
        """Apply ``fn`` to the job's ledger with compare-and-set, retrying on a race.

        ``fn`` gets the current ledger (None when absent) and returns the new one, or
        None to leave it as it is. Returns (before, after).

        Raises:
            RuntimeError: Lost the race ``CAS_ATTEMPTS`` times in a row.
        """
        kv = await self.kv()
        for _ in range(CAS_ATTEMPTS):
            before, revision = await self.read(job_id)
            after = fn(before)
            if after is None:
                return before, before
            after = msgspec.structs.replace(after, updated=time.time())
            try:
                if revision is None:
                    await kv.create(job_id, _encoder.encode(after))
                else:
                    await kv.update(job_id, _encoder.encode(after), last=revision)
            except (KeyWrongLastSequenceError, APIError) as exc:
                if _is_conflict(exc):
                    continue
                raise
            return before, after
        raise RuntimeError(f"ledger of job {job_id}: too many concurrent changes")

    async def put_result(self, job_id: str, chunk: int, result: ChunkResult) -> None:
        """Store a chunk's result under its generation (idempotent)."""
        kv = await self.kv()
        await kv.put(f"{job_id}.c{chunk}.g{result.generation}", _encoder.encode(result))

    async def result(self, job_id: str, chunk: int, generation: int) -> ChunkResult:
        """A stored chunk result.

        Raises:
            KeyNotFoundError: Not stored.
        """
        kv = await self.kv()
        entry = await kv.get(f"{job_id}.c{chunk}.g{generation}")
        assert entry.value is not None
        return _result_decoder.decode(entry.value)


class JobStates:
    """Compare-and-set access to the job-state KV (the runner only ever puts)."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self.js = js
        self.bucket = bucket
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(self.bucket)
        return self._kv

    async def read(self, job_id: str) -> tuple[JobState | None, int | None]:
        """A job's state and its revision (None, None when the bus never saw the job)."""
        value, revision = await read_entry(await self._bucket(), job_id)
        return (None, None) if value is None else (decode_state(value), revision)

    async def get(self, job_id: str) -> JobState | None:
        """A job's state (None when the bus never saw the job)."""
        state, _ = await self.read(job_id)
        return state

    async def swap(self, job_id: str, state: JobState, revision: int) -> bool:
        """Write ``state`` when the key is still at ``revision``; False when it moved on."""
        kv = await self._bucket()
        try:
            await kv.update(job_id, _encoder.encode(state), last=revision)
        except (KeyWrongLastSequenceError, APIError) as exc:
            if _is_conflict(exc):
                return False
            raise
        return True


__all__ = ["ChunkDone", "ChunkResult", "JobStates", "Ledger", "LedgerStore"]
