"""Prometheus metrics every stage exports (served on ``/metrics`` with ``--metrics-port``).

Every stage process defines every metric, so each ``/metrics`` lists them all; those a
stage does not observe stay at zero there (the ``stage`` label tells them apart).
docs/observability.md lists them with their meaning; the Grafana dashboard in
``grafana/qbus.json`` and ``qbus top`` read them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("qbus.metrics")

EVENTS_IN = Counter("qbus_events_in_total", "Events consumed by a stage", ["stage", "type"])
EVENTS_OUT = Counter("qbus_events_out_total", "Events published by a stage", ["stage", "type"])
REJECTIONS = Counter("qbus_rejections_total", "Jobs rejected, by code", ["stage", "code"])
SUPERSEDED = Counter(
    "qbus_superseded_total",
    "Events refused because the job already had its ingested/final event",
    ["stage", "type"],
)
HANDLER_ERRORS = Counter(
    "qbus_handler_errors_total", "Unexpected exceptions in a stage handler", ["stage"]
)
HANDLER_SECONDS = Histogram(
    "qbus_handler_seconds",
    "Time a stage handler spends on one event",
    ["stage"],
    buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
ENGINE_SECONDS = Histogram(
    "qbus_engine_run_seconds",
    "Engine run time, by engine, method and circuit width",
    ["engine", "method", "qubits"],
    buckets=(1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
SANDBOX_WALL_SECONDS = Histogram(
    "qbus_sandbox_wall_seconds",
    "Wall time of a sandboxed run, fork and transfer included",
    ["driver"],
    buckets=(1e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
SANDBOX_CPU_SECONDS = Histogram(
    "qbus_sandbox_cpu_seconds",
    "CPU seconds of a sandboxed run, every thread",
    ["driver"],
    buckets=(1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
SANDBOX_PEAK_RSS = Histogram(
    "qbus_sandbox_peak_rss_bytes",
    "Peak resident memory of a sandboxed run",
    ["driver"],
    buckets=tuple(2.0**k for k in range(24, 37)),
)
SANDBOX_KILLS = Counter(
    "qbus_sandbox_failures_total", "Sandboxed runs stopped, by reason", ["driver", "code"]
)
VERDICTS = Counter("qbus_verifications_total", "Verification verdicts", ["verdict", "test"])

EVENTS_PROCESSED = Counter(
    "qbus_events_processed_total",
    "Inputs a stage finished, by event type and outcome "
    "(ok, rejected, failed, retry, error, undecodable)",
    ["stage", "type", "outcome"],
)
STAGE_LATENCY = Histogram(
    "qbus_stage_latency_seconds",
    "From an input's storage in the stream to its ack, its outputs stored: queue wait, "
    "handler and publish",
    ["stage"],
    buckets=(5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 120),
)
VERIFY_FIDELITY = Histogram(
    "qbus_verification_fidelity",
    "Fidelity of a returned state vector with the exact one",
    ["engine"],
    buckets=(0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 0.9999999, 1.0),
)
VERIFY_TVD = Histogram(
    "qbus_verification_tvd",
    "Total variation distance of sampled counts from the exact distribution",
    ["engine"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
CONSUMER_PENDING = Gauge(
    "qbus_consumer_pending_messages",
    "Messages in the stream not yet delivered to the stage's durable consumer "
    "(JetStream consumer info, polled)",
    ["stage", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "qbus_consumer_ack_pending_messages",
    "Messages delivered to the consumer and not yet acked (polled)",
    ["stage", "consumer"],
)
CONSUMER_REDELIVERED = Gauge(
    "qbus_consumer_redelivered_messages",
    "Messages the consumer has delivered more than once and not yet acked (polled)",
    ["stage", "consumer"],
)
DEAD_LETTERS = Counter(
    "qbus_dead_letters_total",
    "Messages a stage gave up on after max_deliver deliveries (qbus dlq)",
    ["stage", "cause"],
)
EXECUTION_RETRIES = Counter(
    "qbus_execution_retries_total",
    "Executions asked for again after a transient engine failure",
    ["engine"],
)
CACHE_LOOKUPS = Counter(
    "qbus_cache_lookups_total",
    "Result-cache lookups by result (hit, miss); hit ratio = hit / all",
    ["result"],
)
CHAIN_TX_SECONDS = Histogram(
    "qbus_chain_tx_seconds",
    "Chain transaction latency, send to receipt, by outcome (ok, error)",
    ["outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)

AUDIT_CHAINED = Counter(
    "qbus_audit_events_chained_total", "Events the auditor added to the hash chain"
)
AUDIT_LAST_SEQUENCE = Gauge(
    "qbus_audit_last_sequence", "Event-log sequence the audit chain covers up to"
)

# Children that exist before their first observation: the dashboard's queries find the
# series (at zero) on a bus that has not used a cache or a chain yet.
for _result in ("hit", "miss"):
    CACHE_LOOKUPS.labels(_result)
for _outcome in ("ok", "error"):
    CHAIN_TX_SECONDS.labels(_outcome)


def observe_engine_run(engine: str, method: str, qubits: int, seconds: float) -> None:
    """Record one engine run's time (``qubits`` becomes a label value)."""
    ENGINE_SECONDS.labels(engine, method, str(qubits)).observe(seconds)


def cache_lookup(hit: bool) -> None:
    """Count one result-cache lookup (for the cache stage: ``hit`` when served)."""
    CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()


# Chain anchoring (docs/chain.md); its latency is CHAIN_TX_SECONDS above.
CHAIN_TX_FAILURES = Counter(
    "qbus_chain_tx_failures_total", "Chain transactions refused or failed", ["method", "code"]
)
ANCHOR_BATCH_SIZE = Histogram(
    "qbus_anchor_batch_size",
    "Results per anchored Merkle batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
CHAIN_REQUESTS = Counter(
    "qbus_chain_requests_total", "RunRequested logs turned into jobs, by outcome", ["outcome"]
)


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a background thread.

    Raises:
        OSError: The port cannot be bound (in use, or not allowed).
    """
    start_http_server(port, addr=addr)


def serve_or_warn(port: int | None, addr: str = "127.0.0.1") -> None:
    """``serve``, for a long-running process: a port that cannot be bound is logged and
    the process runs on without ``/metrics`` (the jobs matter more than their figures).
    None serves nothing."""
    if port is None:
        return
    try:
        serve(port, addr)
    except OSError as exc:
        log.error("cannot serve /metrics on port %s: %s; running without it", port, exc)


async def poll_consumer(
    js: Any, stream: str, stage: str, consumer: str, interval: float = 5.0
) -> None:
    """Copy the consumer's pending counts from JetStream into the gauges every ``interval``.

    Runs until cancelled; a failed poll (server restarting) is logged and retried.

    Args:
        js: The JetStream context.
        stream: Stream of the consumer.
        stage: ``stage`` label.
        consumer: Durable consumer name.
        interval: Seconds between polls.
    """
    pending = CONSUMER_PENDING.labels(stage, consumer)
    ack_pending = CONSUMER_ACK_PENDING.labels(stage, consumer)
    redelivered = CONSUMER_REDELIVERED.labels(stage, consumer)
    while True:
        try:
            info = await js.consumer_info(stream, consumer)
        except Exception as exc:  # CancelledError is not an Exception: it ends the loop
            log.debug("consumer info of %s failed: %s", consumer, exc)
        else:
            pending.set(info.num_pending or 0)
            ack_pending.set(info.num_ack_pending or 0)
            redelivered.set(info.num_redelivered or 0)
        await asyncio.sleep(interval)
