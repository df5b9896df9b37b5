"""The provider a configuration names: the one module that knows every provider.

Apart from ``base`` (the protocol and the plain providers), so that the Vault provider,
which builds on ``base``, is not imported from it: no import cycle, and hvac itself is
still imported only when a Vault provider is made.
"""

from __future__ import annotations

from qbus.bus.config import Config
from qbus.secrets.base import EnvSecrets, FileSecrets, SecretError, SecretsProvider
from qbus.secrets.vault import VaultSecrets

__all__ = ["provider_from_config"]


def provider_from_config(config: Config) -> SecretsProvider:
    """The provider ``[secrets]`` names: ``env`` (default), ``file`` or ``vault``.

    Raises:
        SecretError: Unknown provider name.
        MissingOptionalLibraryError: ``vault`` without ``hvac`` installed.
    """
    secrets = config.secrets
    match secrets.provider:
        case "env":
            return EnvSecrets()
        case "file":
            return FileSecrets(secrets.directory)
        case "vault":
            return VaultSecrets(secrets.vault, cache_seconds=secrets.cache_seconds)
    raise SecretError(f"unknown secrets provider {secrets.provider!r}; use env, file or vault")
