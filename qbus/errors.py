"""One error root for qbus, with a stable ``code`` on every error.

Codes are part of the wire protocol: they travel in JobRejected/JobFailed events and
clients branch on them, so a code is never renamed or reused.
"""

from __future__ import annotations

_PATH_MARKER = " - at `"


def validation_path(exc: Exception) -> str | None:
    """The field path (``$.ops[2].qubits``) of a msgspec ``ValidationError``, or None.

    msgspec puts the path only into the message (``Expected `int`, got `str` - at
    `$.shots```); this is the one place that reads it, so a change in msgspec's wording
    breaks one function and its test, not every caller.
    """
    text = str(exc)
    if _PATH_MARKER not in text:
        return None
    return text.split(_PATH_MARKER, 1)[1].rstrip("`")


def validation_message(exc: Exception) -> str:
    """A msgspec ``ValidationError``'s message without its path suffix."""
    return str(exc).partition(_PATH_MARKER)[0]


class QbusWarning(UserWarning):
    """Warnings raised by qbus itself (tests turn them into errors)."""


class QbusError(Exception):
    """Root of every error qbus raises on purpose.

    Attributes:
        code: Stable machine-readable code (``snake_case``).
        where: Where the problem is, for a person: ``line 3, column 5`` or ``$.ops[2]``.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.where = where

    def __str__(self) -> str:
        return f"{self.message} (at {self.where})" if self.where else self.message


class CircuitError(QbusError):
    """A circuit is malformed: syntax, unknown gate, wrong qubit index, bad parameters."""

    code = "invalid_circuit"


class QasmSyntaxError(CircuitError):
    """OpenQASM text that does not parse; ``where`` holds ``line L, column C``."""

    code = "qasm_syntax"

    def __init__(self, message: str, *, line: int, column: int, code: str | None = None):
        super().__init__(message, code=code, where=f"line {line}, column {column}")
        self.line = line
        self.column = column


class SchemaError(QbusError):
    """An event or IR document does not match its schema; ``where`` is the field path."""

    code = "invalid_schema"


class LimitError(QbusError):
    """A job exceeds a configured limit (size, qubits, shots, memory)."""

    code = "limit_exceeded"


class EngineError(QbusError):
    """An engine failed to run a request it had accepted."""

    code = "engine_error"

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False):
        super().__init__(message, code=code)
        self.retryable = retryable


class UnknownEngineError(QbusError):
    """No engine of that name is installed."""

    code = "unknown_engine"


class MissingOptionalLibraryError(QbusError, ImportError):
    """An optional dependency is not installed; the message carries the install hint."""

    code = "missing_dependency"

    def __init__(self, library: str, extra: str, purpose: str, *, hint: str | None = None):
        # ``hint`` replaces the qbus-extra install command for libraries qbus has no extra
        # for (Cirq, Braket: the user installs them themselves).
        install = hint or f"pip install 'qbus[{extra}]'"
        super().__init__(f"{purpose} needs {library}, which is not installed: {install}")
        self.library = library
        self.extra = extra


class BusError(QbusError):
    """Talking to NATS failed or the server could not be started."""

    code = "bus_error"


class BusUnreachableError(BusError):
    """No connection to NATS: no server at the URL, or it refused the login."""

    code = "bus_unreachable"


class ConfigError(QbusError):
    """Configuration that cannot work, found before connecting to anything."""

    code = "invalid_config"


class Reject(QbusError):
    """Raised by a stage handler: refuse the job (→ JobRejected, input acked)."""

    code = "rejected"


class Refuse(Reject):
    """Raised by a stage handler: refuse a message that holds no job (a job id already
    in use). The JobRejected goes to the refusal subject keyed by the message, never to
    the result subject of the job id it names, which is another submission's job."""

    code = "refused"


class Fail(QbusError):
    """Raised by a stage handler: the job ends without a result (→ JobFailed, input acked)."""

    code = "failed"


class Retry(QbusError):
    """Raised by a stage handler: try this message again after ``delay`` seconds (→ nak).

    After the consumer's ``max_deliver`` attempts the job fails with ``retries_exhausted``.
    """

    code = "retry"

    def __init__(self, message: str, *, delay: float = 1.0):
        super().__init__(message)
        self.delay = delay


class SandboxFailure(QbusError):
    """A sandbox stopped a job's engine code, or could not run it.

    ``code`` says why, and is what the job's JobFailed carries:

    - ``memory_limit``: the run tried to allocate past its memory limit;
    - ``cpu_limit``: the run used up its CPU seconds;
    - ``wall_timeout``: the run outlived its wall-clock limit;
    - ``sandbox_violation``: the engine code was denied something the sandbox forbids
      (network, a file outside its view, a write outside its tmp);
    - ``worker_died``: the sandboxed process died for another reason (a crash, a signal);
    - ``sandbox_unavailable``: the driver cannot run on this machine (``qbus doctor``).

    Attributes:
        driver: The driver that ran the job (``process``, ``bwrap``).
    """

    code = "sandbox_failure"

    def __init__(self, message: str, *, code: str, driver: str = ""):
        super().__init__(message, code=code)
        self.driver = driver
