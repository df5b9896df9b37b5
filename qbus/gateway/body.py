"""Reading a request body under the size limit, and its media type."""

from __future__ import annotations

from fastapi import Request

from qbus.gateway.problems import Problem


def too_large(limit: int) -> Problem:
    """The 413 for a body over ``limit`` bytes."""
    return Problem(
        413,
        "body_too_large",
        f"the request body is larger than this gateway's limit of {limit} bytes "
        "([gateway] max_body_bytes)",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, refused when it is over ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a
    body sent without one (chunked) is read until it passes the limit, and no further.

    Raises:
        Problem: 413 ``body_too_large``; 400 ``invalid_content_length``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise Problem(
                400, "invalid_content_length", f"Content-Length {declared!r} is not a number"
            ) from None
        if length > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported(kind: str, allowed: tuple[str, ...]) -> Problem:
    """The 415 for a body of media type ``kind``."""
    return Problem(
        415,
        "unsupported_media_type",
        f"Content-Type {kind or '(none)'!r} is not accepted here; send one of "
        + ", ".join(allowed),
    )
