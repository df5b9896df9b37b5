"""Errors of the AI assistant (codes are stable, like every qbus error code)."""

from __future__ import annotations

from qbus.errors import QbusError


def start_hint(host: str, model: str) -> str:
    """How to get a model server running, for messages to a person."""
    return (
        f"start one with `ollama serve` (listening on {host}; set [ai] host or "
        f"QBUS_AI_HOST otherwise) and fetch the model with `ollama pull {model}`"
    )


class AiError(QbusError):
    """Root of the AI assistant's errors."""

    code = "ai_error"


class AiUnavailable(AiError):
    """No model server answered in time (not running, unreachable, or too slow)."""

    code = "ai_unavailable"


class AiModelMissing(AiError):
    """The server runs but does not have the configured model."""

    code = "ai_model_missing"


class AiAnswerError(AiError):
    """The model's answers stayed invalid after every retry; names the last error."""

    code = "ai_invalid_answer"

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_error: str,
        last_answer: str = "",
        reply: object = None,
    ):
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error
        self.last_answer = last_answer
        self.reply = reply  # the last AiReply: model, digest and prompt version to record
