"""``CachedSecret``: one secret as a stage uses it — cached briefly, retried with backoff.

A stage handler that needs a secret (the chain anchor stage needs ``chain/verifier_key``)
holds one ``CachedSecret`` and calls ``await secret.require()`` per message::

    key = CachedSecret(provider_from_config(config), "chain/verifier_key", ttl=5.0)

    async def handle(self, event):
        private_key = await key.require()   # str, or raises Retry(delay) → nak + redelivery
        ...

``require`` raises ``qbus.errors.Retry`` with a growing delay while the store is down, so
the runner naks the message and it comes back later; after the consumer's ``max_deliver``
attempts the job fails with ``retries_exhausted`` and the store's error in its message.
The value is never logged; the error says which secret and why.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from qbus.errors import Retry
from qbus.secrets.base import SecretError, SecretsProvider

log = logging.getLogger("qbus.secrets")


class CachedSecret:
    """Secret ``key`` from ``provider``, re-read at most every ``ttl`` seconds.

    Args:
        provider: Where the secret lives (``provider_from_config(config)``).
        key: Its name, e.g. ``chain/verifier_key``.
        ttl: Seconds a value is reused; a rotated secret is picked up after at most this
            long (plus the provider's own cache, ``[secrets] cache_seconds`` for Vault).
        retry_delay: First retry delay after a failed read; doubled per further failure.
        max_retry_delay: Upper bound of that delay.
    """

    def __init__(
        self,
        provider: SecretsProvider,
        key: str,
        *,
        ttl: float = 5.0,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.provider = provider
        self.key = key
        self.ttl = ttl
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.failures = 0
        self._value: str | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the value: a repr ends up in logs and tracebacks.
        return f"CachedSecret({self.key!r}, provider={self.provider.name!r}, ttl={self.ttl})"

    def get(self) -> str:
        """The value (blocking; from the cache while younger than ``ttl``).

        Raises:
            SecretError: The provider cannot give the secret (its message says why).
        """
        with self._lock:
            if self._value is not None and time.monotonic() - self._read_at < self.ttl:
                return self._value
            try:
                value = self.provider.get(self.key)
            except SecretError:
                self.failures += 1
                raise
            self.failures = 0
            self._value, self._read_at = value, time.monotonic()
            return value

    async def aget(self) -> str:
        """``get`` without blocking the event loop (the provider may do network I/O).

        Raises:
            SecretError: As ``get``.
        """
        with self._lock:
            if self._value is not None and time.monotonic() - self._read_at < self.ttl:
                return self._value
        return await asyncio.to_thread(self.get)

    async def require(self) -> str:
        """The value, or ``Retry`` for a stage handler when the store cannot give it.

        Raises:
            Retry: With the provider's error as message and a delay that doubles per
                consecutive failure (``retry_delay`` … ``max_retry_delay``).
        """
        try:
            return await self.aget()
        except SecretError as exc:
            delay = min(self.retry_delay * 2 ** max(self.failures - 1, 0), self.max_retry_delay)
            log.warning("secret %r unavailable, retrying in %.1f s: %s", self.key, delay, exc)
            raise Retry(f"secret {self.key!r} unavailable: {exc.message}", delay=delay) from exc

    def invalidate(self) -> None:
        """Drop the cached value: the next read asks the provider."""
        with self._lock:
            self._value, self._read_at = None, float("-inf")
