"""A real gateway for tests: uvicorn serving ``create_app`` on a free loopback port in the
test's event loop, and a reader of server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

PROBLEM = "application/problem+json"


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a port the OS picks); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=3
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass
class Message:
    """One server-sent event."""

    id: str | None
    event: str | None
    data: Any


@dataclass
class SSEReader:
    """Reads server-sent events from an open streaming response."""

    response: httpx.Response
    _lines: AsyncIterator[str] | None = field(default=None)

    async def next(self, timeout: float = 60.0) -> Message | None:
        """The next message (comments and pings skipped); None when the stream ended."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Message | None:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        fields: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if "data" in fields:
                    return Message(
                        fields.get("id"), fields.get("event"), json.loads(fields["data"])
                    )
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        return None

    async def all(self, timeout: float = 60.0) -> list[Message]:
        """Every message until the stream ends."""
        out = []
        while (message := await self.next(timeout)) is not None:
            out.append(message)
        return out


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **kwargs: Any) -> AsyncIterator[SSEReader]:
    """Open an SSE stream at ``path`` (``Accept: text/event-stream``)."""
    headers = {"Accept": "text/event-stream", **kwargs.pop("headers", {})}
    async with client.stream("GET", path, headers=headers, **kwargs) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(response)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check ``response`` is an RFC 9457 problem with ``status`` and ``code``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == f"https://qbus.dev/problems/{code}"
    assert body["title"] and body["detail"] and body["instance"].startswith("/")
    return body
