"""The secrets provider interface and the default env/file providers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from qbus.errors import QbusError


class SecretError(QbusError):
    """A secret is missing or its store cannot be reached (the message names which)."""

    code = "secret_unavailable"


class SecretsProvider(Protocol):
    """Where secrets come from."""

    name: str

    def get(self, key: str) -> str:
        """The current value of secret ``key`` (e.g. ``chain/verifier_key``).

        Raises:
            SecretError: Missing secret or unreachable store.
        """
        ...


def _env_name(key: str) -> str:
    return "QBUS_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


class EnvSecrets:
    """Secrets from ``QBUS_SECRET_<KEY>`` variables (``chain/verifier_key`` →
    ``QBUS_SECRET_CHAIN_VERIFIER_KEY``)."""

    name = "env"

    def __init__(self, env: dict[str, str] | None = None):
        self._env = env

    def get(self, key: str) -> str:
        env = os.environ if self._env is None else self._env
        var = _env_name(key)
        value = env.get(var)
        if value is None:
            raise SecretError(f"secret {key!r} is not set: export {var}=…")
        return value


class FileSecrets:
    """Secrets as files under a directory (``<dir>/chain/verifier_key``), e.g. mounted
    by an orchestrator; read on every ``get`` so a rotated file is picked up."""

    name = "file"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def get(self, key: str) -> str:
        path = self.directory / key
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SecretError(f"secret {key!r} not readable at {path}: {exc}") from exc
