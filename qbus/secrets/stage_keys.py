"""A stage's signing key, from the secrets provider (qbus/bus/signing.py)."""

from __future__ import annotations

import logging

from qbus.bus.config import Config
from qbus.bus.signing import Signer
from qbus.secrets.base import FileSecrets, SecretError
from qbus.secrets.providers import provider_from_config
from qbus.secrets.resolve import stage_user

log = logging.getLogger("qbus.secrets")


def stage_signer(config: Config, stage: str) -> Signer | None:
    """The signer of stage ``stage`` (every executor is ``execute``), or None when signing
    is off or the stage has no key: its events then go out unsigned, and verifiers that
    hold the stages' public keys will not accept its final events.

    The key is secret ``<[signing] key_prefix><stage>`` from the configured provider,
    else the dev key ``qbus up`` wrote under the state directory.

    Raises:
        ConfigError: The key is not a base64 Ed25519 seed, or ``cryptography`` is missing.
    """
    if not config.signing.enabled:
        return None
    name = stage_user(stage)
    key = config.signing.key_prefix + name
    for provider in (provider_from_config(config), FileSecrets(config.state_dir)):
        try:
            return Signer.from_secret(name, provider.get(key))
        except SecretError:
            continue
    log.warning("stage %s has no signing key (secret %s): its events go out unsigned", name, key)
    return None
