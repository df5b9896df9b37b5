"""RFC 9457 problem details: every error the gateway answers is ``application/problem+json``.

The ``code`` member is the same code a ``job.rejected`` event would carry for the same
fault (``qasm_syntax``, ``invalid_schema`` …), or one of the gateway's own for faults of
the HTTP request itself (``malformed_json``, ``body_too_large``, ``unsupported_media_type``,
``job_not_found``, ``unauthorized``, ``forbidden``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qbus.errors import QbusError

log = logging.getLogger("qbus.gateway")

PROBLEM_TYPE = "https://qbus.dev/problems/"
MEDIA_TYPE = "application/problem+json"

# Codes for statuses Starlette raises itself (an unknown route, a wrong method).
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


class Problem(QbusError):
    """An HTTP error answered as problem+json.

    Args:
        status: The HTTP status.
        code: The stable code (``type`` is ``https://qbus.dev/problems/<code>``).
        detail: What went wrong, for a person.
        title: A short summary (defaults to the code in words).
        headers: Extra response headers (``WWW-Authenticate`` …).
        where: The field or position at fault, when there is one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(detail, code=code, where=where)
        self.status = status
        self.detail = detail
        self.title = title or code.replace("_", " ")
        self.headers = headers or {}


def job_not_found(job_id: str) -> Problem:
    """The 404 for a job the caller may not see: unknown, or another tenant's (the same
    answer for both, so a job id does not leak)."""
    return Problem(404, "job_not_found", f"no job {job_id!r} is known to this bus")


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """The response for ``problem``, ``instance`` being the request's path."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + problem.code,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
        "instance": instance,
    }
    if problem.where:
        body["where"] = problem.where
    return JSONResponse(
        body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json: ours, Starlette's, validation's."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = str(exc.detail)
        if code in ("not_found", "method_not_allowed"):
            # Starlette says only "Not Found": say what was asked and where the routes are.
            detail = (
                f"{detail}: no route answers {request.method} {request.url.path}; "
                "the API's routes are in /v1/openapi.json"
            )
        problem = Problem(exc.status_code, code, detail, headers=dict(exc.headers or {}))
        return problem_response(problem, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        problem = Problem(422, "invalid_request", detail, where=where or None)
        return problem_response(problem, request.url.path)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        # Anything unexpected: logged with its traceback, answered without it.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        problem = Problem(
            500,
            "internal_error",
            f"the gateway failed on this request ({type(exc).__name__}); its log has the details",
        )
        return problem_response(problem, request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(Exception, on_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
