"""One job is one trace: a span per stage in causal order, across processes and languages.

The stages run in this process (the ``pipeline`` fixture) and record into an in-memory
exporter; a real stage process exports over OTLP/HTTP to a receiver that decodes the
real protobuf wire format.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.client import Client
from qbus.consumers.pipeline import Pipeline
from qbus.observability import tracing
from qbus.producers.submit import submit, wait_final
from qbus.schemas.events import JobCompleted
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "rewrite", "route", "execute", "verify")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter, "qbus-tests")
    yield exporter
    tracing.reset()


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _job_spans(exporter: InMemorySpanExporter, job_id: str) -> list[ReadableSpan]:
    """Every span of the trace(s) that the job's stage spans belong to."""
    finished = exporter.get_finished_spans()
    traces = {s.context.trace_id for s in finished if s.attributes.get(tracing.JOB_ID) == job_id}
    return [s for s in finished if s.context.trace_id in traces]


def _one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, (name, [s.name for s in found])
    return named[0]


async def _spans_of(
    exporter: InMemorySpanExporter, job_id: str, last: str = "qbus.verify process"
) -> list[ReadableSpan]:
    # The final event is published after the verify span ends, so it is normally there
    # already; a short wait covers the exporter's lock only.
    for _ in range(100):
        found = _job_spans(exporter, job_id)
        if any(s.name == last for s in found):
            return found
        await asyncio.sleep(0.02)
    return _job_spans(exporter, job_id)


def _assert_stage_chain(found: list[ReadableSpan], job_id: str) -> list[ReadableSpan]:
    """One trace; each stage's span is the child of the previous stage's; returns them."""
    assert len({s.context.trace_id for s in found}) == 1
    chain = [_one(found, f"qbus.{stage} process") for stage in STAGES]
    for previous, span in itertools.pairwise(chain):
        assert span.parent is not None and span.parent.span_id == previous.context.span_id, (
            f"{span.name} is not the child of {previous.name}"
        )
        assert span.start_time >= previous.start_time
    for stage, span in zip(STAGES, chain, strict=True):
        assert span.kind == SpanKind.CONSUMER
        attrs = span.attributes
        assert attrs[tracing.JOB_ID] == job_id
        assert attrs[tracing.MESSAGING_SYSTEM] == "nats"
        assert attrs[tracing.CONSUMER_GROUP].startswith(stage)
        assert attrs[tracing.DELIVERY_COUNT] == 1
        assert attrs[tracing.OUTCOME] == "ok"
        assert attrs[tracing.DESTINATION].startswith("qbus.")
    assert chain[0].attributes[tracing.EVENT_TYPE] == "job.submitted"
    assert chain[0].attributes[tracing.DESTINATION] == "qbus.submit"
    assert chain[3].attributes[tracing.DESTINATION] == f"qbus.exec.qiskit-aer.{job_id}"
    assert chain[4].attributes[tracing.EVENT_TYPE] == "execution.completed"
    return chain


def _assert_children(found: list[ReadableSpan], chain: list[ReadableSpan]) -> None:
    ingest, rewrite, _, execute, verify = chain
    parse = _one(found, "qbus.ingest parse")
    assert parse.parent.span_id == ingest.context.span_id
    assert parse.attributes["qbus.qubits"] == 2 and parse.attributes["qbus.source_format"]
    passes = _one(found, "qbus.rewrite passes")
    assert passes.parent.span_id == rewrite.context.span_id
    each = [s for s in found if s.name.startswith("qbus.rewrite pass ")]
    assert {s.name for s in each} >= {
        "qbus.rewrite pass cancel_inverses",
        "qbus.rewrite pass merge_rotations",
        "qbus.rewrite pass drop_identities",
    }
    assert all(s.parent.span_id == passes.context.span_id for s in each)
    sandbox = _one(found, "qbus.execute sandbox")
    assert sandbox.parent.span_id == execute.context.span_id
    assert sandbox.attributes["qbus.sandbox.driver"] == "inline"
    run = _one(found, "qbus.execute engine.run")
    assert run.parent.span_id == sandbox.context.span_id
    assert run.attributes["qbus.engine"] == "qiskit-aer"
    assert run.attributes["qbus.qubits"] == 2
    assert run.attributes["qbus.method"] == "sample"
    assert run.attributes["qbus.engine.run_seconds"] > 0
    check = _one(found, "qbus.verify check")
    assert check.parent.span_id == verify.context.span_id
    assert check.attributes["qbus.verification.verdict"] == "pass"


async def _result_headers(bus: Bus, job_id: str) -> dict[str, str]:
    msg = await bus.js.get_last_msg(bus.config.stream, bus.subjects.result(job_id))
    return dict(msg.headers or {})


async def test_a_job_is_one_trace_with_a_span_per_stage_in_causal_order(
    config: Config, bus: Bus, pipeline: Pipeline, spans: InMemorySpanExporter
):
    async with Client(config=config.bus) as client:
        handle = await client.submit(QASM2_BELL, shots=200)
        final = await handle.result(timeout=60)
    assert isinstance(final, JobCompleted)
    found = await _spans_of(spans, handle.job_id)
    chain = _assert_stage_chain(found, handle.job_id)
    _assert_children(found, chain)
    # The client's publish is the root: a PRODUCER span, parent of the ingest span.
    produce = _one(found, "qbus.submit publish")
    assert produce.kind == SpanKind.PRODUCER and produce.parent is None
    assert chain[0].parent.span_id == produce.context.span_id
    assert handle.traceparent.split("-")[1] == _hex(produce.context.trace_id, 32)
    # The final event carries the verify span's context: a consumer of results joins too.
    trace_id, verify_id = _hex(chain[4].context.trace_id, 32), _hex(chain[4].context.span_id, 16)
    sent = (await _result_headers(bus, handle.job_id))["traceparent"]
    assert sent.startswith(f"00-{trace_id}-{verify_id}-")


async def test_baggage_travels_with_the_trace_through_every_stage(
    config: Config, bus: Bus, pipeline: Pipeline, spans: InMemorySpanExporter
):
    # Propagation goes through opentelemetry.propagate (OTEL_PROPAGATORS, default W3C trace
    # context + baggage): a producer's baggage reaches every stage's outputs.
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    j = job(QASM2_BELL)
    await submit(bus, j, headers={"traceparent": parent, "baggage": "tenant=acme,run=7"})
    final = await wait_final(bus, j.job_id, 60)
    assert isinstance(final, JobCompleted)
    headers = await _result_headers(bus, j.job_id)
    assert headers["traceparent"].split("-")[1] == parent.split("-")[1]
    assert dict(kv.split("=") for kv in headers["baggage"].split(",")) == {
        "tenant": "acme",
        "run": "7",
    }


async def test_a_rejected_job_ends_its_trace_at_ingest(
    config: Config, bus: Bus, pipeline: Pipeline, spans: InMemorySpanExporter
):
    bad = job(QASM2_BELL.replace("h q[0]", "hh q[0]"))
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    await submit(bus, bad, headers={"traceparent": parent})
    await wait_final(bus, bad.job_id, 60)
    found = await _spans_of(spans, bad.job_id, last="qbus.ingest process")
    ingest = _one(found, "qbus.ingest process")
    assert _hex(ingest.context.trace_id, 32) == parent.split("-")[1]
    assert ingest.attributes[tracing.OUTCOME] == "rejected"
    assert _one(found, "qbus.ingest parse").status.status_code.name == "ERROR"
    assert not [s for s in found if s.name == "qbus.rewrite process"]


async def test_node_client_traceparent_is_continued_by_every_stage(
    config: Config, bus: Bus, pipeline: Pipeline, spans: InMemorySpanExporter
):
    from tests.test_node_client import _node, run_client

    node = _node()
    trace_id, node_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{node_span}-01"
    code, out, err = await run_client(
        node, "submit.mjs", "--url", config.bus.url, "--shots", "300",
        "--traceparent", traceparent,
    )  # fmt: skip
    assert code == 0, (out, err)
    assert f"traceparent {traceparent}" in err
    job_id = json.loads(out.strip().splitlines()[-1])["job_id"]
    found = await _spans_of(spans, job_id)
    chain = _assert_stage_chain(found, job_id)
    assert _hex(chain[0].context.trace_id, 32) == trace_id
    # The Node client's span (not recorded here: it lives in the Node process) is the
    # parent of the first Python span, across the process and language boundary.
    assert chain[0].parent.span_id == int(node_span, 16) and chain[0].parent.is_remote
    _assert_children(found, chain)


async def test_go_client_traceparent_is_continued_by_every_stage(
    config: Config, bus: Bus, pipeline: Pipeline, spans: InMemorySpanExporter, tmp_path
):
    from tests.test_go_client import _run, build_client

    binary = await build_client(tmp_path)
    trace_id, go_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{go_span}-01"
    code, out, err = await _run(
        str(binary), "--url", config.bus.url, "--shots", "300", "--traceparent", traceparent
    )
    assert code == 0, (out, err)
    assert f"traceparent {traceparent}" in err
    job_id = json.loads(out.strip().splitlines()[-1])["job_id"]
    chain = _assert_stage_chain(await _spans_of(spans, job_id), job_id)
    assert _hex(chain[0].context.trace_id, 32) == trace_id
    assert chain[0].parent.span_id == int(go_span, 16) and chain[0].parent.is_remote
    code, _, err = await _run(str(binary), "--url", config.bus.url, "--traceparent", "nope")
    assert code == 2 and "--traceparent nope" in err


async def test_node_client_rejects_a_malformed_traceparent(config: Config):
    from tests.test_node_client import _node, run_client

    code, _, err = await run_client(
        _node(), "submit.mjs", "--url", config.bus.url, "--traceparent", "not-a-trace"
    )
    assert code == 2 and "--traceparent not-a-trace" in err


async def test_tracing_off_passes_the_trace_context_through_unchanged(
    config: Config, bus: Bus, pipeline: Pipeline
):
    assert not tracing.enabled()
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    j = job(QASM2_BELL)
    sent = {"traceparent": parent, "tracestate": "vendor=1", "baggage": "tenant=acme,run=7"}
    await submit(bus, j, headers=sent)
    final = await wait_final(bus, j.job_id, 60)
    assert isinstance(final, JobCompleted)
    headers = await _result_headers(bus, j.job_id)
    assert {k: headers.get(k) for k in sent} == sent


# -- a real stage process exporting over OTLP/HTTP -----------------------------------------


class _OtlpReceiver(ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf trace exports (POST /v1/traces), as a collector does."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                receiver.got.set()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def spans(self) -> list[tuple[dict[str, str], object]]:
        """(resource attributes, span) of every span received."""
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                out += [(resource, span) for ss in rs.scope_spans for span in ss.spans]
        return out


def _stage_env(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, "QBUS_URL": config.bus.url, **extra}


async def test_stage_process_exports_its_spans_over_otlp_http(config: Config, bus: Bus):
    receiver = _OtlpReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = _stage_env(
        config,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbus", "stage", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        j = job(QASM2_BELL)
        await submit(bus, j, headers={"traceparent": parent})
        ingested = await bus.js.subscribe(
            bus.subjects.ingested(j.job_id), stream=bus.config.stream, ordered_consumer=True
        )
        msg = await ingested.next_msg(timeout=60)
        await ingested.unsubscribe()
        # What the stage sent on carries the same trace, its own span as the parent.
        assert msg.headers["traceparent"].split("-")[1] == parent.split("-")[1]
        assert await asyncio.to_thread(receiver.got.wait, 30), "no OTLP export arrived"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        receiver.shutdown()
    received = receiver.spans()
    assert set(receiver.paths) == {"/v1/traces"}
    names = {span.name for _, span in received}
    assert {"qbus.ingest process", "qbus.ingest parse"} <= names, (names, err[-2000:])
    resource, ingest = next((r, s) for r, s in received if s.name == "qbus.ingest process")
    assert resource["service.name"] == "qbus-ingest"
    assert ingest.trace_id.hex() == parent.split("-")[1]
    assert ingest.parent_span_id.hex() == parent.split("-")[2]
    assert msg.headers["traceparent"].split("-")[2] == ingest.span_id.hex()


def test_unknown_exporter_is_a_clear_error_before_connecting(config: Config):
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "stage", "ingest"],
        env=_stage_env(config, OTEL_TRACES_EXPORTER="zipkin"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "OTEL_TRACES_EXPORTER='zipkin': unknown exporter zipkin" in out.stderr


def test_setup_reads_the_standard_variables():
    code = (
        "from qbus.observability import tracing\n"
        "assert tracing.setup('qbus-x', env={}) is False and not tracing.enabled()\n"
        "tracing.reset()\n"
        "assert tracing.setup('qbus-x', env={'OTEL_TRACES_EXPORTER': 'console', "
        "'OTEL_SDK_DISABLED': 'true'}) is False\n"
        "tracing.reset()\n"
        "assert tracing.setup('qbus-x', env={'OTEL_TRACES_EXPORTER': 'console'}) is True\n"
        "with tracing.span('hello'):\n"
        "    pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_stage_env_plain(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    assert exported["name"] == "hello"
    assert exported["resource"]["attributes"]["service.name"] == "qbus-x"


def _stage_env_plain() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


async def test_anchor_batch_span_and_chain_tx_span_join_the_job_trace(
    chain_qbus_config: Config, bus: Bus, spans: InMemorySpanExporter
):
    from prometheus_client import REGISTRY

    from tests.test_chain_anchor import CORE_STAGES, anchored_events

    def tx_count() -> float:
        return REGISTRY.get_sample_value("qbus_chain_tx_seconds_count", {"outcome": "ok"}) or 0

    before = tx_count()
    async with Pipeline(chain_qbus_config, stages=(*CORE_STAGES, "anchor")) as pipeline:
        (final,) = await run_jobs(bus, [job(QASM2_BELL, shots=64)], timeout=60)
        (anchored,) = await anchored_events(bus, 1, timeout=60)
        pipeline.check()
    assert isinstance(final, JobCompleted) and anchored.job_id == final.job_id
    found = await _spans_of(spans, final.job_id, last="qbus.anchor process")
    chain = _assert_stage_chain(found, final.job_id)
    # A batch of one: the anchor span continues the job's trace under the verify span.
    anchor = _one(found, "qbus.anchor process")
    assert anchor.parent.span_id == chain[-1].context.span_id
    assert anchor.attributes["messaging.batch.message_count"] == 1
    tx = _one(found, "qbus.anchor chain.tx anchor")
    assert tx.kind == SpanKind.CLIENT and tx.parent.span_id == anchor.context.span_id
    assert tx.attributes["qbus.chain.tx_hash"] == anchored.tx_hash
    assert tx.attributes["qbus.chain.block"] == anchored.block_number
    assert not any("http" in str(v) for v in tx.attributes.values())  # no RPC URL
    assert tx_count() >= before + 1
    msg = await bus.js.get_last_msg(bus.config.stream, bus.subjects.anchored(final.job_id))
    assert msg.headers["traceparent"].split("-")[1:3] == [
        _hex(anchor.context.trace_id, 32),
        _hex(anchor.context.span_id, 16),
    ]


async def test_a_batch_of_many_links_every_job_trace():
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    try:
        parents = [f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01" for _ in range(3)]
        with tracing.batch("anchor", "qbus.result.*", [{"traceparent": p} for p in parents]):
            pass
    finally:
        tracing.reset()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    linked = {(_hex(ln.context.trace_id, 32), _hex(ln.context.span_id, 16)) for ln in span.links}
    assert linked == {tuple(p.split("-")[1:3]) for p in parents}
