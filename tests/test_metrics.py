"""Prometheus counters move as jobs pass through the stages."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client import REGISTRY

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.observability.metrics import serve
from tests.jobs import QASM2_BELL, job, run_jobs


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_counters_move_and_metrics_endpoint_serves_them(bus: Bus, pipeline: Pipeline):
    before_in = _value("qbus_events_in_total", stage="ingest", type="job.submitted")
    before_out = _value("qbus_events_out_total", stage="verify", type="job.completed")
    before_rej = _value("qbus_rejections_total", stage="ingest", code="unknown_gate")
    await run_jobs(
        bus, [job(QASM2_BELL), job(QASM2_BELL), job(QASM2_BELL.replace("h q[0]", "hh q[0]"))]
    )
    assert _value("qbus_events_in_total", stage="ingest", type="job.submitted") == before_in + 3
    # The client can see a result a moment before the stage has settled its input.
    for _ in range(100):
        if _value("qbus_events_out_total", stage="verify", type="job.completed") >= before_out + 2:
            break
        await asyncio.sleep(0.02)
    assert _value("qbus_events_out_total", stage="verify", type="job.completed") == before_out + 2
    assert _value("qbus_rejections_total", stage="ingest", code="unknown_gate") == before_rej + 1
    assert (
        _value("qbus_engine_run_seconds_count", engine="qiskit-aer", method="sample", qubits="2")
        >= 2
    )

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'qbus_events_in_total{stage="ingest",type="job.submitted"}' in body
