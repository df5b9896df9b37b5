"""Secrets: the verifier's chain key, NATS credentials, cloud-engine credentials.

A provider maps a secret's name (``chain/verifier_key``) to its value: ``env``
(``QBUS_SECRET_<KEY>``), ``file`` (one file per key) or ``vault`` (OpenBao/Vault KV v2
through hvac, cached for ``[secrets] cache_seconds``). A stage holds a ``CachedSecret``
per secret it needs: briefly cached, so a rotated secret is picked up without a restart,
and ``require()`` turns an unreachable store into a retry with backoff. Secret values
never go into events, logs or traces (docs/security.md).
"""

from __future__ import annotations

from qbus.secrets.base import EnvSecrets, FileSecrets, SecretError, SecretsProvider
from qbus.secrets.cached import CachedSecret
from qbus.secrets.providers import provider_from_config
from qbus.secrets.resolve import load_config, resolve_secrets, stage_bus_config

__all__ = [
    "CachedSecret",
    "EnvSecrets",
    "FileSecrets",
    "SecretError",
    "SecretsProvider",
    "load_config",
    "provider_from_config",
    "resolve_secrets",
    "stage_bus_config",
]
