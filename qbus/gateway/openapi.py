"""The gateway's OpenAPI document: FastAPI's, with the ``job.submitted`` schema that
``POST /v1/jobs`` takes, committed as schemas/openapi.json beside the AsyncAPI document
(tests/test_gateway_openapi.py fails when the committed file is stale)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from fastapi import FastAPI

from qbus.schemas.events import JobSubmitted
from qbus.schemas.schema_text import normalize_descriptions

OPENAPI_FILE = "openapi.json"
REGEN_COMMAND = "qbus gateway --openapi schemas/openapi.json"


def install_openapi(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document carry the ``JobSubmitted`` schema (and the types
    it uses) under ``components.schemas``, where ``POST /v1/jobs`` refers to it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        _, components = msgspec.json.schema_components(
            (JobSubmitted,), ref_template="#/components/schemas/{name}"
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(normalize_descriptions(components))
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_text(app: FastAPI) -> str:
    """``app``'s OpenAPI document as the committed file holds it."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
