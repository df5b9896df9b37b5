"""Retry start-up work (connecting, provisioning) while a server or a cluster is coming
back: exponential backoff with full jitter, so a restarted cluster is not met by every
stage at the same instant.

Only failures that pass on their own are retried (a server that is restarting, a
JetStream cluster electing a leader); a wrong URL in a running setup looks the same as a
server that is down, so connecting is retried only for as long as the caller allows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.js.errors import APIError, ServiceUnavailableError

from qbus.errors import BusUnreachableError

T = TypeVar("T")
log = logging.getLogger("qbus.bus")

# JetStream API error codes that mean "not now": the system is unavailable (no meta
# leader yet) or too few peers are up for the replicas asked (a node still joining).
_TRANSIENT_API_CODES = frozenset({10008, 10023})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that waiting can cure: a timeout, a lost or
    reconnecting connection, no JetStream responder yet, a cluster without a leader."""
    if isinstance(
        exc,
        TimeoutError
        | ServiceUnavailableError
        | nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError,
    ):
        return True
    if isinstance(exc, BusUnreachableError):
        # No server answered (down, restarting); a refused login is not transient.
        return isinstance(exc.__cause__, OSError | TimeoutError | nats.errors.NoServersError)
    return isinstance(exc, APIError) and exc.err_code in _TRANSIENT_API_CODES


def backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Seconds before retry ``attempt`` (1 for the first): full jitter over an
    exponential ceiling, ``uniform(0, min(cap, base * 2**attempt))``."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


async def retrying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_for: float,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``attempt`` until it succeeds, retrying transient failures for ``retry_for``
    seconds (0: once).

    Raises:
        Exception: ``attempt``'s own error when it is not transient, or when the time is
            up (the last one).
    """
    deadline = time.monotonic() + retry_for
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = backoff(tries)
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "%s failed (%s: %s); retrying in %.1f s",
                what,
                type(exc).__name__,
                exc or "no detail",
                delay,
            )
            await asyncio.sleep(delay)
