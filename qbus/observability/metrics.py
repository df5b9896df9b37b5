"""Prometheus metrics every stage exports (served on ``/metrics`` with ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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
    "Engine run time",
    ["engine", "method"],
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


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a background thread."""
    start_http_server(port, addr=addr)
