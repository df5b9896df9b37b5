"""The result cache: a verified result reused for a job that asks for the same run.

Key: sha256 over a canonical JSON of what decides a result — the IR hash, method,
shots and seed (for sampling methods only), noise model, parameters, sweep points,
observables, dynamics spec, the requested engine (a name, or ``auto``), the engine
version policy (``exact`` or ``any``) and the tenant. Statevector, expectation and
dynamics results do not depend on shots or seed, so those are left out of their key; a
sampled result does, and since ingest derives an unseeded job's seed from its job id,
two unseeded ``sample`` jobs never share a key: a cache hit for sampling needs an
explicit seed.

Values live in the KV bucket ``<stream>_CACHE`` (TTL from ``[cache] ttl_seconds``): the
JobCompleted of the run, as JSON. With policy ``exact`` a hit also needs the engine
version that made the result to be the one installed for the router now.
"""

from __future__ import annotations

import hashlib
import logging

import msgspec
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError

from qbus.bus.kv import read_value
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.events import JobCompleted, JobOptions, default_seed, encode

log = logging.getLogger("qbus.cache")

DETERMINISTIC_METHODS = frozenset({"statevector", "expectation", "dynamics"})
"""Methods whose result does not depend on shots or seed (noiseless or not)."""

KEY_VERSION = 1
_canonical = msgspec.json.Encoder(order="deterministic")


def reusable(method: str, seed: int | None, job_id: str) -> bool:
    """Whether a job's result could ever answer another job, or another's answer it.

    A sampled job whose seed is the one ingest derived from its job id has a key no other
    job can have: job ids are unique (a second submission of an id never gets past
    ingest's first-only guard). Such a job is neither looked up nor stored, which saves
    the route stage a KV read and a KV write per job (docs/architecture.md, "Operations
    per job"). A user who gives that very seed by hand only misses a cache hit.
    """
    return method in DETERMINISTIC_METHODS or seed != default_seed(job_id)


def cache_key(circuit_hash: str, options: JobOptions, version_policy: str) -> str:
    """The cache key of a job: 64 hex characters.

    Args:
        circuit_hash: The IR hash of the circuit as routed (after rewriting).
        options: The job's options; ``seed`` must be the one it runs with.
        version_policy: ``exact`` or ``any``.
    """
    sampled = options.method not in DETERMINISTIC_METHODS
    material = {
        "v": KEY_VERSION,
        "circuit": circuit_hash,
        "method": options.method,
        "shots": options.shots if sampled else None,
        "seed": options.seed if sampled else None,
        "noise": options.noise,
        "parameters": options.parameters,
        "sweep": options.sweep,
        "observables": options.observables,
        "dynamics": options.dynamics,
        "engine": options.engine,
        "versions": version_policy,
        # Tenants never share entries: a hit names the job it came from.
        "tenant": options.tenant,
    }
    return hashlib.sha256(_canonical.encode(material)).hexdigest()


class ResultCache:
    """The KV bucket behind the cache.

    Args:
        js: JetStream context.
        bucket: Bucket name (``BusConfig.kv_cache``).
        ttl_seconds: TTL given to the bucket when this creates it.
    """

    def __init__(self, js: object, bucket: str, ttl_seconds: float) -> None:
        self.js = js
        self.bucket = bucket
        self.ttl_seconds = ttl_seconds
        self._kv = None

    async def _bucket(self):
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)  # type: ignore[attr-defined]
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(  # type: ignore[attr-defined]
                    js_api.KeyValueConfig(
                        bucket=self.bucket,
                        history=1,
                        ttl=self.ttl_seconds,
                        storage=js_api.StorageType.FILE,
                        description="qbus result cache (docs/routing.md)",
                    )
                )
            try:
                await self._apply_ttl()
            except Exception:  # the cache still works, with the bucket's own TTL
                log.warning("cache: cannot set the TTL of %s", self.bucket, exc_info=True)
        return self._kv

    async def _apply_ttl(self) -> None:
        # The bucket may have been made by provisioning with another TTL: the [cache]
        # setting of the stage that serves the cache wins (KV TTL is the stream's max age).
        stream = f"KV_{self.bucket}"
        info = await self.js.stream_info(stream)  # type: ignore[attr-defined]
        if abs((info.config.max_age or 0) - self.ttl_seconds) > 1e-3:
            info.config.max_age = self.ttl_seconds
            # The server refuses a dedupe window longer than the age limit.
            window = info.config.duplicate_window or self.ttl_seconds
            info.config.duplicate_window = min(window, self.ttl_seconds)
            await self.js.update_stream(info.config)  # type: ignore[attr-defined]

    async def get(self, key: str) -> JobCompleted | None:
        """The cached final event under ``key``, or None."""
        value = await read_value(await self._bucket(), key)
        if value is None:
            return None
        try:
            event = decode_event(value)
        except UNDECODABLE:
            log.warning("cache: unreadable entry %s ignored", key)
            return None
        return event if isinstance(event, JobCompleted) else None

    async def put(self, key: str, event: JobCompleted) -> None:
        """Store ``event`` under ``key`` (idempotent: the same run writes the same value)."""
        kv = await self._bucket()
        await kv.put(key, encode(event))
