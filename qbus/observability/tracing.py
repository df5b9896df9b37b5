"""OpenTelemetry tracing across the bus: one job is one trace, a span per stage.

Every publish carries the W3C ``traceparent`` (and ``tracestate``) of the span that caused
it in the NATS headers; every consume extracts it and runs the handler inside a CONSUMER
span that is its child (``qbus.<stage> process``). A stage's outputs carry that span's
context, so the next stage's span is its child in turn: the trace's parent links follow
the job's causal order, from the producer (any language that sends ``traceparent``)
through ingest, rewrite, route, execute and verify.

Setup is once per process (``setup``), from the standard OpenTelemetry variables:

* ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none`` (comma-separated for
  several). qbus defaults to ``none`` rather than the specification's ``otlp``, so a
  stage without a collector neither sends nor logs anything;
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, and
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default, or ``grpc`` when
  ``opentelemetry-exporter-otlp-proto-grpc`` is installed);
* ``OTEL_SERVICE_NAME`` (default ``qbus-<stage>``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_SDK_DISABLED``.

With no exporter, tracing is off: no span is created and each stage copies the trace
headers of its input to its outputs unchanged (one dictionary lookup per message), so a
trace begun by a client still reaches the result. A process whose application has set
up its own global ``TracerProvider`` (a user's program around ``qbus.client``) traces
into that provider instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

from qbus.errors import ConfigError, MissingOptionalLibraryError
from qbus.observability import metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

# The SDK (≈50 ms to import) is imported by setup() only when an exporter is configured:
# every qbus command imports this module.

log = logging.getLogger("qbus.tracing")

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
"""The NATS headers that carry the W3C trace context and W3C baggage."""

EXPORTERS = ("otlp", "console", "none")

# Attribute names: OpenTelemetry messaging conventions where one exists, qbus.* otherwise.
MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION = "messaging.operation.type"
CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGE_ID = "messaging.message.id"
DELIVERY_COUNT = "messaging.nats.delivery_count"
JOB_ID = "qbus.job_id"
EVENT_TYPE = "qbus.event_type"
OUTCOME = "qbus.outcome"


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads NATS headers: exact name first, then any case (some clients capitalise)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            for name, v in carrier.items():
                if name.lower() == lowered:
                    value = v
                    break
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_getter = _HeaderGetter()


class _State:
    """This process's tracing setup (module-level: one per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configured = False
        self.on = False  # read per message: a plain attribute, not a provider lookup
        self.provider: TracerProvider | None = None
        self.tracers: dict[str, Tracer] = {}


_state = _State()


def setup(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Set up tracing for this process from the OpenTelemetry environment variables.

    Idempotent: the first call decides, later calls return its answer. When the
    application already installed a global SDK ``TracerProvider``, that one is used and
    nothing is configured here.

    Args:
        service_name: ``service.name`` when ``OTEL_SERVICE_NAME`` is not set
            (``qbus-ingest`` …).
        env: Variables to read instead of ``os.environ`` (for tests).

    Returns:
        Whether spans are recorded.

    Raises:
        ConfigError: An exporter name qbus does not know.
        MissingOptionalLibraryError: ``grpc`` asked for without its exporter package.
    """
    with _state.lock:
        if _state.configured:
            # The application may have installed its provider since the first call.
            _state.on = _state.on or _global_sdk_provider() is not None
            return _state.on
        env = os.environ if env is None else env
        _state.configured = True
        if _global_sdk_provider() is not None:
            _state.on = True
            return True
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        names = [
            n.strip().lower()
            for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")
            if n.strip()
        ]
        unknown = sorted(set(names) - set(EXPORTERS))
        if unknown:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: unknown exporter "
                f"{', '.join(unknown)}; qbus supports {', '.join(EXPORTERS)}"
            )
        exporters = [_exporter(n, env) for n in names if n != "none"]
        if not exporters:
            return False
        from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = SDKTracerProvider(resource=_resource(service_name, env))
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _install(provider)
        # Other instrumented libraries in this process report into the same provider.
        trace.set_tracer_provider(provider)
        log.info("tracing on: exporters %s, service %s", ", ".join(names), service_name)
        return True


def use_exporter(
    exporter: SpanExporter, service_name: str = "qbus", *, batch: bool = False
) -> TracerProvider:
    """Trace this process into ``exporter`` (tests, embedding), replacing any earlier setup.

    Args:
        exporter: E.g. the SDK's ``InMemorySpanExporter``.
        service_name: ``service.name`` of the spans.
        batch: Export from a background thread instead of as each span ends.

    Returns:
        The provider; ``shutdown()`` it (or call ``reset()``) when done.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = SDKTracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    with _state.lock:
        _state.configured = True
        _install(provider)
    return provider


def reset() -> None:
    """Forget this module's provider (flushing it): tracing is off until the next setup."""
    with _state.lock:
        provider = _state.provider
        _install(None)
        _state.configured = False
    if provider is not None:
        provider.shutdown()  # type: ignore[attr-defined]


def _install(provider: TracerProvider | None) -> None:
    _state.provider = provider
    _state.tracers = {}
    _state.on = provider is not None or _global_sdk_provider() is not None


def _global_sdk_provider() -> TracerProvider | None:
    """The application's global provider, when it installed a real one."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
        return None
    return provider


def enabled() -> bool:
    """Whether spans are recorded in this process (cheap: called per message).

    True after ``setup``/``use_exporter`` configured an exporter, or when ``setup``
    found the application's own global SDK provider.
    """
    return _state.on


def tracer(name: str = "qbus") -> Tracer:
    """The tracer of instrumentation scope ``name`` (``qbus.ingest`` …)."""
    found = _state.tracers.get(name)
    if found is None:
        provider = _state.provider or trace.get_tracer_provider()
        found = provider.get_tracer(name)
        _state.tracers[name] = found
    return found


def _resource(service_name: str, env: Mapping[str, str]) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # An explicit attribute beats the environment in Resource.create: only give ours
    # when the operator did not name the service.
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return Resource.create({} if named else {SERVICE_NAME: service_name})


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise MissingOptionalLibraryError(
                "opentelemetry-exporter-otlp-proto-grpc",
                "",
                "OTLP over gRPC",
                hint="pip install opentelemetry-exporter-otlp-proto-grpc "
                "(or use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)",
            ) from exc
        return OTLPSpanExporter()
    if protocol != "http/protobuf":
        raise ConfigError(f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    # The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, HEADERS, TIMEOUT itself.
    return HTTPSpanExporter()


# -- propagation ------------------------------------------------------------------------


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context in NATS ``headers`` (an empty context when there is none).

    Through OpenTelemetry's global propagator, so ``OTEL_PROPAGATORS`` applies (default:
    W3C trace context and W3C baggage).
    """
    return propagate.extract(headers or {}, getter=_getter)


def inject(
    headers: MutableMapping[str, str] | None = None, context: otel_context.Context | None = None
) -> MutableMapping[str, str]:
    """Write the trace context (the current span's by default), and any baggage, into
    ``headers``, through OpenTelemetry's global propagator."""
    headers = {} if headers is None else headers
    propagate.inject(headers, context=context)
    return headers


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The W3C headers among NATS ``headers``, to pass on unchanged when tracing is off."""
    if not headers:
        return None
    found = {k: headers[k] for k in TRACE_HEADERS if k in headers}
    return found or None


# -- spans ------------------------------------------------------------------------------


class _NoSpan:
    """What ``span`` returns with tracing off: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    scope: str = "qbus",
) -> contextlib.AbstractContextManager[Span]:
    """A child span of the current one, made current; nothing at all when tracing is off.

    Use as ``with span("qbus.ingest parse", {...}) as s:``. Exceptions are recorded on
    the span and re-raised. Handlers use this for their inner steps (``qbus.ingest
    parse``, ``qbus.execute engine.run`` …); off, it costs a function call.
    """
    if not _state.on:
        return _NO_SPAN
    return tracer(scope).start_as_current_span(name, kind=kind, attributes=dict(attributes or {}))


def set_attributes(target: Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes whose value is not None (a span refuses None)."""
    if target.is_recording():
        target.set_attributes({k: v for k, v in attributes.items() if v is not None})


def mark_error(target: Span, message: str) -> None:
    """Flag ``target`` as failed with ``message`` (a job ending in JobFailed)."""
    if target.is_recording():
        target.set_status(Status(StatusCode.ERROR, message))


@contextlib.contextmanager
def chain_tx(chain: str, operation: str = "anchor", **attributes: Any) -> Iterator[Span]:
    """Span and latency metric around one chain transaction (send → receipt).

    For the anchor stage: ``with chain_tx("anvil", batch=len(roots)) as s: ...``. The
    time goes to ``qbus_chain_tx_seconds{outcome}`` whether or not tracing is on; an
    exception marks the outcome ``error`` and propagates.
    """
    started = time.perf_counter()
    outcome = "error"
    attrs = {"qbus.chain": chain, "qbus.chain.operation": operation}
    attrs.update({f"qbus.chain.{k}": v for k, v in attributes.items() if v is not None})
    try:
        with span(f"qbus.anchor chain.{operation}", attrs, kind=SpanKind.CLIENT) as current:
            yield current
        outcome = "ok"
    finally:
        metrics.CHAIN_TX_SECONDS.labels(outcome).observe(time.perf_counter() - started)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, if one is active."""
    return inject({}).get("traceparent")


@contextlib.contextmanager
def consume(
    stage: str,
    subject: str,
    headers: Mapping[str, str] | None,
    consumer: str,
) -> Iterator[Span]:
    """The CONSUMER span of one message's handling, child of the context in its headers.

    Made current, so the handler's own spans nest under it and ``inject()`` inside it
    gives the context the stage's outputs carry. The extracted context is made current
    first, so its baggage travels on with the span.
    """
    parent = extract(headers)
    token = otel_context.attach(parent)
    try:
        with tracer(f"qbus.{stage}").start_as_current_span(
            f"qbus.{stage} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                MESSAGING_SYSTEM: "nats",
                OPERATION: "process",
                DESTINATION: subject,
                CONSUMER_GROUP: consumer,
                "qbus.stage": stage,
            },
        ) as current:
            yield current
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def produce(
    subject: str,
    *,
    traceparent: str | None = None,
    tracestate: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    scope: str = "qbus.client",
) -> Iterator[dict[str, str]]:
    """A PRODUCER span for one publish; yields the trace headers to send with it.

    The span is the child of ``traceparent`` when given (a context handed over from
    elsewhere), else of the current span. With tracing off it yields the given
    ``traceparent`` (or nothing), so the caller can fall back to its own.
    """
    given = {"traceparent": traceparent} if traceparent else {}
    if tracestate and traceparent:
        given["tracestate"] = tracestate
    if not enabled():
        yield dict(given)
        return
    parent = extract(given) if given else None
    with tracer(scope).start_as_current_span(
        f"{subject} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            MESSAGING_SYSTEM: "nats",
            OPERATION: "publish",
            DESTINATION: subject,
            **(attributes or {}),
        },
    ):
        yield dict(inject({}))


@contextlib.contextmanager
def batch(
    stage: str,
    subject: str,
    carriers: list[Mapping[str, str] | None],
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """The CONSUMER span of a stage that settles many messages in one unit (a batch).

    One message: its context is the parent, as with ``consume``. Several: the span is a
    root with a link to each message's span (OpenTelemetry's batch pattern), so every
    job's trace can be followed into the batch. Made current: spans and publishes inside
    are its children. Nothing when tracing is off.
    """
    if not _state.on:
        yield trace.INVALID_SPAN
        return
    contexts = [trace.get_current_span(extract(c)).get_span_context() for c in carriers]
    valid = [c for c in contexts if c.is_valid]
    parent = extract(carriers[0]) if len(carriers) == 1 else otel_context.Context()
    with tracer(f"qbus.{stage}").start_as_current_span(
        f"qbus.{stage} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[trace.Link(c) for c in valid] if len(carriers) > 1 else None,
        attributes={
            MESSAGING_SYSTEM: "nats",
            OPERATION: "process",
            DESTINATION: subject,
            "messaging.batch.message_count": len(carriers),
            "qbus.stage": stage,
            **(attributes or {}),
        },
    ) as current:
        yield current


def traced_chain_tx(fn: Any) -> Any:
    """Decorate an async ``_transact(self, call, method, …)``: a CLIENT span per chain
    transaction (``qbus.anchor chain.tx <method>``) with its hash, block and gas.

    The RPC URL is left out on purpose: provider URLs often embed an API key.
    """
    import functools

    @functools.wraps(fn)
    async def wrapper(self: Any, call: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        attrs = {"qbus.chain.method": method, "qbus.chain.id": getattr(self, "chain_id", None)}
        with span(
            f"qbus.anchor chain.tx {method}",
            {k: v for k, v in attrs.items() if v is not None},
            kind=SpanKind.CLIENT,
        ) as current:
            result = await fn(self, call, method, *args, **kwargs)
            set_attributes(
                current,
                {
                    "qbus.chain.tx_hash": getattr(result, "tx_hash", None),
                    "qbus.chain.block": getattr(result, "block_number", None),
                    "qbus.chain.gas_used": getattr(result, "gas_used", None),
                },
            )
            return result

    return wrapper
