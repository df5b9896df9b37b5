"""The model server client: the official ``ollama`` package against ``[ai] host``.

Every answer comes back as an ``AiReply`` carrying what events must record: the model's
name and digest (from the server's ``/api/tags``) and the prompt version. Calls are
async (httpx underneath), so a stage's event loop keeps running while the model thinks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from qbus.ai.errors import AiError, AiModelMissing, AiUnavailable, start_hint
from qbus.bus.config import AiConfig
from qbus.errors import MissingOptionalLibraryError

# Greedy decoding with a fixed seed: the same prompt gives the same answer where the
# model runtime allows it, so a redelivered job tends to get the same proposal.
MODEL_OPTIONS = {"temperature": 0.0, "seed": 0}


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A model as the server lists it.

    Attributes:
        name: Model name (``qwen2.5-coder:7b``).
        digest: The server's digest of the model's weights and config.
    """

    name: str
    digest: str


class AiReply(msgspec.Struct, frozen=True, kw_only=True):
    """One answer of the model.

    Attributes:
        text: The answer text.
        model: Model name the server answered with.
        model_digest: Its digest.
        prompt_version: Version of the prompt file the request used.
    """

    text: str
    model: str
    model_digest: str
    prompt_version: str


def _full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _import_ollama() -> Any:
    try:
        import ollama
    except ImportError as exc:
        raise MissingOptionalLibraryError("ollama", "ai", "the AI assistant") from exc
    return ollama


class OllamaClient:
    """Talks to one Ollama server for one configured model.

    Args:
        config: The ``[ai]`` settings (host, model, timeout, stream).

    Raises:
        MissingOptionalLibraryError: The ``ollama`` package is not installed.
    """

    def __init__(self, config: AiConfig) -> None:
        self.config = config
        self._ollama = _import_ollama()
        self._client = self._ollama.AsyncClient(host=config.host, timeout=config.timeout)
        self._info: ModelInfo | None = None

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _translate(self, exc: BaseException) -> AiError:
        import httpx

        hint = start_hint(self.config.host, self.config.model)
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 404:
                return AiModelMissing(
                    f"the model server at {self.config.host} does not have model "
                    f"{self.config.model!r} ({exc.error}); run `ollama pull {self.config.model}`"
                )
            return AiError(f"the model server at {self.config.host} answered: {exc}")
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return AiUnavailable(
                f"the model server at {self.config.host} did not answer within "
                f"{self.config.timeout:g} s"
            )
        if isinstance(exc, ConnectionError | httpx.TransportError | OSError):
            return AiUnavailable(f"no model server reachable at {self.config.host}: {hint}")
        return AiError(f"talking to the model server failed: {type(exc).__name__}: {exc}")

    async def _call(self, coro: Any) -> Any:
        import httpx

        try:
            async with asyncio.timeout(self.config.timeout):
                return await coro
        except (
            self._ollama.ResponseError,
            TimeoutError,
            ConnectionError,
            OSError,
            httpx.HTTPError,
        ) as exc:
            raise self._translate(exc) from exc

    async def model_info(self) -> ModelInfo:
        """The configured model's name and digest, from ``/api/tags`` (cached).

        Raises:
            AiUnavailable: No server answered.
            AiModelMissing: The server does not list the model.
        """
        if self._info is not None:
            return self._info
        listing = await self._call(self._client.list())
        wanted = _full_name(self.config.model)
        for entry in listing.models:
            if entry.model and _full_name(entry.model) == wanted:
                self._info = ModelInfo(name=entry.model, digest=entry.digest or "")
                return self._info
        have = ", ".join(m.model or "?" for m in listing.models) or "none"
        raise AiModelMissing(
            f"the model server at {self.config.host} has no model {self.config.model!r} "
            f"(it has: {have}); run `ollama pull {self.config.model}`"
        )

    async def chat(self, messages: Sequence[dict[str, str]], *, prompt_version: str) -> AiReply:
        """One chat turn (``/api/chat``), streamed or not as ``[ai] stream`` says.

        Raises:
            AiUnavailable, AiModelMissing, AiError: See ``model_info``.
        """
        info = await self.model_info()

        async def run() -> tuple[str, str]:
            if self.config.stream:
                parts, model = [], info.name
                stream = await self._client.chat(
                    model=self.config.model,
                    messages=list(messages),
                    stream=True,
                    options=MODEL_OPTIONS,
                )
                async for chunk in stream:
                    parts.append(chunk.message.content or "")
                    model = chunk.model or model
                return "".join(parts), model
            reply = await self._client.chat(
                model=self.config.model, messages=list(messages), options=MODEL_OPTIONS
            )
            return reply.message.content or "", reply.model or info.name

        text, model = await self._call(run())
        return AiReply(
            text=text, model=model, model_digest=info.digest, prompt_version=prompt_version
        )

    async def generate(self, prompt: str, *, system: str, prompt_version: str) -> AiReply:
        """One completion (``/api/generate``), streamed or not as ``[ai] stream`` says.

        Raises:
            AiUnavailable, AiModelMissing, AiError: See ``model_info``.
        """
        info = await self.model_info()

        async def run() -> tuple[str, str]:
            if self.config.stream:
                parts, model = [], info.name
                stream = await self._client.generate(
                    model=self.config.model,
                    prompt=prompt,
                    system=system,
                    stream=True,
                    options=MODEL_OPTIONS,
                )
                async for chunk in stream:
                    parts.append(chunk.response or "")
                    model = chunk.model or model
                return "".join(parts), model
            reply = await self._client.generate(
                model=self.config.model, prompt=prompt, system=system, options=MODEL_OPTIONS
            )
            return reply.response or "", reply.model or info.name

        text, model = await self._call(run())
        return AiReply(
            text=text, model=model, model_digest=info.digest, prompt_version=prompt_version
        )
