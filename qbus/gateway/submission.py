"""A ``POST /v1/jobs`` request → the ``JobSubmitted`` it asks for, or a problem.

Two shapes of body: the ``job.submitted`` JSON (the committed schema,
schemas/job.submitted.json; ``type``, ``event_id``, ``job_id`` and ``producer`` may be left
out), or the program text itself (``text/plain`` or ``application/vnd.qbus.qasm``) with
the options as query parameters. Everything ingest would refuse for the request's own
shape (malformed JSON, a field of the wrong type, a program that does not parse) is
refused here, before anything is published, with the code ingest's ``job.rejected``
would carry.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from qbus.bus.config import Limits
from qbus.bus.runner import schema_rejection
from qbus.errors import QbusError, validation_path
from qbus.frontends.bounds import TooDeep, check_json_depth
from qbus.frontends.program import parse_program
from qbus.gateway.problems import Problem
from qbus.schemas.events import JobSubmitted, new_event_id, new_job_id

JSON_TYPES = ("application/json",)
TEXT_TYPES = ("text/plain", "application/vnd.qbus.qasm")
ACCEPTED_TYPES = JSON_TYPES + TEXT_TYPES
TAG = "job.submitted"
PRODUCER = "qbus.gateway"
# Query parameters that are no job option.
_NOT_OPTIONS = frozenset({"access_token"})
# Namespace of job ids derived from an idempotency key: the same key, the same job.
_IDEMPOTENT_NS = uuid.UUID("6f1d4c52-8d1e-4f0e-9a57-1b0c2c7e9e11")
MAX_KEY_LENGTH = 200


def idempotent_ids(key: str, tenant: str | None) -> tuple[str, str]:
    """The (event id, job id) of a submission sent with ``Idempotency-Key: key``.

    The event id is the key (prefixed by the caller's tenant, so two tenants' keys never
    meet in the server's ``Nats-Msg-Id`` dedupe); the job id is derived from it, so a
    repeated POST names the same job and the stream stores it once.

    Raises:
        Problem: 400 ``invalid_idempotency_key``.
    """
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise Problem(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )
    event_id = f"{tenant}:{key}" if tenant else key
    return event_id, uuid.uuid5(_IDEMPOTENT_NS, event_id).hex


def from_json(body: bytes) -> dict[str, Any]:
    """The fields of a ``job.submitted`` JSON body.

    Raises:
        Problem: 400 ``malformed_json`` (not JSON, or nested too deep), 422
            ``invalid_schema`` (JSON that is no object).
    """
    try:
        check_json_depth(body)
        data = msgspec.json.decode(body)
    except TooDeep as exc:
        raise Problem(400, "malformed_json", f"the body is no usable JSON: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Problem(
            422,
            "invalid_schema",
            f"the body must be a job.submitted object, not {type(data).__name__}",
        )
    tag = data.get("type", TAG)
    if tag != TAG:
        raise Problem(
            422, "invalid_schema", f"POST /v1/jobs takes a {TAG} event, not {tag!r}", where="$.type"
        )
    return data


def from_text(body: bytes, query: Mapping[str, str]) -> dict[str, Any]:
    """The fields of a program-text body, its options from the query parameters.

    A parameter whose value starts with ``{`` or ``[`` is read as JSON (``labels``,
    ``parameters``, ``noise`` …); the rest are converted to the field's type.

    Raises:
        Problem: 400 ``invalid_encoding`` (not UTF-8), ``malformed_json`` (a JSON-valued
            parameter that does not parse).
    """
    try:
        source = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "invalid_encoding", f"the program text is not UTF-8: {exc}") from exc
    data: dict[str, Any] = {}
    for name, value in query.items():
        if name in _NOT_OPTIONS:
            continue
        if value[:1] in ("{", "["):
            try:
                data[name] = msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                raise Problem(
                    400, "malformed_json", f"query parameter {name}: not valid JSON: {exc}"
                ) from exc
        else:
            data[name] = value
    data["source"] = source
    return data


def build_job(
    data: dict[str, Any],
    *,
    tenant: str | None,
    idempotency_key: str | None,
    strict: bool,
    limits: Limits,
) -> JobSubmitted:
    """The ``JobSubmitted`` of a request's fields, checked as ingest would check it.

    Args:
        data: The fields (``from_json`` or ``from_text``).
        tenant: The caller's tenant: it replaces any tenant the fields name, as ingest
            replaces it with the submit subject's.
        idempotency_key: The ``Idempotency-Key`` header, if sent.
        strict: Whether values must have their JSON types already (a JSON body) or may
            be converted from text (query parameters).
        limits: The bus's ``[limits]``, for parsing the program.

    Raises:
        Problem: 422 with ingest's code: ``invalid_schema`` (or a field's own code such as
            ``unknown_method``), ``qasm_syntax`` and the other parse errors.
    """
    data = {**data, "type": TAG}
    data.setdefault("producer", PRODUCER)
    if idempotency_key is not None:
        data["event_id"], derived_job = idempotent_ids(idempotency_key, tenant)
        data.setdefault("job_id", derived_job)
    data.setdefault("event_id", new_event_id())
    data.setdefault("job_id", new_job_id())
    if tenant:
        data["tenant"] = tenant
    try:
        job = msgspec.convert(data, JobSubmitted, strict=strict)
    except msgspec.ValidationError as exc:
        where = validation_path(exc)
        code, message = schema_rejection(TAG, str(exc), where)
        raise Problem(422, code, message, where=where) from exc
    if job.source is not None:
        try:
            parse_program(
                job.source, job.format, max_bytes=limits.max_source_bytes, max_ops=limits.max_ops
            )
        except QbusError as exc:
            where = f" ({exc.where})" if exc.where else ""
            raise Problem(
                422, exc.code, f"the program does not parse{where}: {exc.message}", where=exc.where
            ) from exc
    return job
