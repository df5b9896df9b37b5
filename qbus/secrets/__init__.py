"""Secrets: the verifier's chain key, NATS credentials, cloud-engine credentials.

A provider maps a secret's name (``chain/verifier_key``) to its value. Providers are
read on every ``get`` so that a rotated secret is picked up without a restart; callers
that need speed cache for a short time themselves. Secret values never go into events,
logs or traces.
"""

from __future__ import annotations

from qbus.secrets.base import (
    EnvSecrets,
    FileSecrets,
    SecretError,
    SecretsProvider,
    provider_from_config,
)

__all__ = ["EnvSecrets", "FileSecrets", "SecretError", "SecretsProvider", "provider_from_config"]
