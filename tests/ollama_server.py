"""A test double of an Ollama server that speaks Ollama's real HTTP API.

An LLM cannot run on the test machines, so the tests talk to this instead: a real HTTP
server on a free loopback port, answering the endpoints the ``ollama`` client calls with
the same JSON bodies and framing Ollama sends (written against the client's source and
Ollama's API docs):

* ``GET /api/tags`` — ``{"models": [{"name", "model", "modified_at", "size", "digest",
  "details"}]}``;
* ``POST /api/show`` — model details, ``model_info``, ``capabilities``; 404 for an
  unknown model;
* ``POST /api/chat`` and ``POST /api/generate`` — with ``"stream": false`` one JSON
  object (``done: true`` plus the timing counters); otherwise (Ollama's default)
  ``application/x-ndjson`` over chunked transfer encoding, one object per line with a
  piece of the answer and ``done: false``, closed by a ``done: true`` object with
  ``done_reason`` and counters; 404 ``{"error": "model ... not found"}`` for an unknown
  model.

Answers are recorded responses queued per test (``answers``); each request takes the
next one, and every request body is kept in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = str | Callable[[dict[str, Any]], str]

DIGEST = "2b0496514337a3d5901f1672d5c5bb1e2d0dc23bdfa4e1c67c2a2a9a1d2a2c41"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama:
    """The server. Use as a context manager; ``url`` is its base URL.

    Args:
        models: Model name → digest, as ``/api/tags`` lists them.
        answers: Recorded answer texts (or functions of the request body), used in order
            by ``/api/chat`` and ``/api/generate``.
        delay: Seconds to wait before answering a chat/generate request (a slow model).
        chunk: Characters per streamed piece.
    """

    def __init__(
        self,
        models: dict[str, str] | None = None,
        answers: list[Answer] | None = None,
        *,
        delay: float = 0.0,
        chunk: int = 7,
    ) -> None:
        self.models = models if models is not None else {"qwen2.5-coder:7b": DIGEST}
        self.answers: list[Answer] = list(answers or [])
        self.delay = delay
        self.chunk = chunk
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def chats(self) -> list[dict[str, Any]]:
        """Bodies of the chat requests received, in order."""
        return [body for path, body in self.requests if path == "/api/chat"]

    def _next_answer(self, body: dict[str, Any]) -> str | None:
        with self._lock:
            if not self.answers:
                return None
            answer = self.answers.pop(0)
        return answer(body) if callable(answer) else answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and chunked, like Ollama's Go server

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                return json.loads(raw or b"{}")

            def _unknown_model(self, name: str) -> None:
                self._json(404, {"error": f'model "{name}" not found, try pulling it first'})

            def do_GET(self) -> None:
                fake.requests.append((self.path, {}))
                if self.path == "/api/tags":
                    self._json(
                        200,
                        {
                            "models": [
                                {
                                    "name": name,
                                    "model": name,
                                    "modified_at": "2026-11-01T10:00:00.000000000Z",
                                    "size": 4683087332,
                                    "digest": digest,
                                    "details": {
                                        "parent_model": "",
                                        "format": "gguf",
                                        "family": "qwen2",
                                        "families": ["qwen2"],
                                        "parameter_size": "7.6B",
                                        "quantization_level": "Q4_K_M",
                                    },
                                }
                                for name, digest in fake.models.items()
                            ]
                        },
                    )
                elif self.path == "/api/version":
                    self._json(200, {"version": "0.5.7"})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self._body()
                fake.requests.append((self.path, body))
                name = body.get("model", "")
                if self.path == "/api/show":
                    if name not in fake.models:
                        return self._unknown_model(name)
                    return self._json(
                        200,
                        {
                            "license": "Apache License 2.0",
                            "modelfile": f"FROM {name}\n",
                            "parameters": 'stop "<|im_end|>"',
                            "template": "{{ .Prompt }}",
                            "details": {
                                "parent_model": "",
                                "format": "gguf",
                                "family": "qwen2",
                                "families": ["qwen2"],
                                "parameter_size": "7.6B",
                                "quantization_level": "Q4_K_M",
                            },
                            "model_info": {"general.architecture": "qwen2"},
                            "capabilities": ["completion", "tools", "insert"],
                            "modified_at": "2026-11-01T10:00:00.000000000Z",
                        },
                    )
                if self.path not in ("/api/chat", "/api/generate"):
                    return self._json(404, {"error": "not found"})
                if name not in fake.models:
                    return self._unknown_model(name)
                if fake.delay:
                    time.sleep(fake.delay)
                answer = fake._next_answer(body)
                if answer is None:
                    return self._json(500, {"error": "the test double has no recorded answer left"})
                chat = self.path == "/api/chat"
                if body.get("stream", True):
                    self._stream(name, answer, chat)
                else:
                    self._json(200, {**self._piece(name, answer, chat), **self._final(chat)})

            def _piece(self, name: str, text: str, chat: bool) -> dict[str, Any]:
                head: dict[str, Any] = {"model": name, "created_at": _now()}
                if chat:
                    head["message"] = {"role": "assistant", "content": text}
                else:
                    head["response"] = text
                return head

            def _final(self, chat: bool) -> dict[str, Any]:
                tail: dict[str, Any] = {
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": 4_883_583_458,
                    "load_duration": 1_334_875,
                    "prompt_eval_count": 26,
                    "prompt_eval_duration": 342_546_000,
                    "eval_count": 282,
                    "eval_duration": 4_535_599_000,
                }
                if not chat:
                    tail["context"] = [1, 2, 3]
                return tail

            def _stream(self, name: str, text: str, chat: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pieces = [text[i : i + fake.chunk] for i in range(0, len(text), fake.chunk)]
                lines = [{**self._piece(name, p, chat), "done": False} for p in pieces]
                lines.append({**self._piece(name, "", chat), **self._final(chat)})
                for line in lines:
                    data = json.dumps(line).encode() + b"\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
