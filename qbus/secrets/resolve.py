"""Fill in the secrets a configuration names: NATS credentials, cloud keys, stage users."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from qbus.bus.config import BusConfig, Config, read_config
from qbus.secrets.providers import provider_from_config


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Settings from a TOML file (``QBUS_CONFIG`` or ``path``) and ``QBUS_*`` variables,
    with the secrets they name read from the provider they name (``resolve_secrets``).

    Raises:
        ConfigError: Unknown keys, wrong types or impossible combinations, naming the field.
        SecretError: A named secret cannot be read.
    """
    return resolve_secrets(read_config(path, env))


def resolve_secrets(config: Config) -> Config:
    """``config`` with ``[bus] password_secret``/``token_secret`` read into the password
    and token, and ``[secrets] environment`` exported to this process's environment
    (e.g. Braket's ``AWS_ACCESS_KEY_ID``), all from the configured provider.

    Raises:
        SecretError: A named secret cannot be read.
    """
    bus = config.bus
    if not (bus.password_secret or bus.token_secret or config.secrets.environment):
        return config
    provider = provider_from_config(config)
    changes: dict[str, str] = {}
    if bus.password_secret:
        changes["password"] = provider.get(bus.password_secret)
    if bus.token_secret:
        changes["token"] = provider.get(bus.token_secret)
    for variable, key in config.secrets.environment.items():
        os.environ[variable] = provider.get(key)
    return msgspec.structs.replace(config, bus=msgspec.structs.replace(bus, **changes))


def stage_user(stage: str) -> str:
    """The NATS user a stage connects as in auth mode (every executor is ``execute``)."""
    return "execute" if stage.startswith("execute") else stage


def stage_bus_config(config: Config, stage: str) -> BusConfig:
    """The bus settings stage ``stage`` connects with.

    Without ``[auth] stage_users`` that is ``[bus]`` unchanged; with it, the stage's own
    NATS user and the password in secret ``<password_prefix><user>``.

    Raises:
        SecretError: The stage's password cannot be read.
    """
    if not config.auth.stage_users:
        return config.bus
    user = stage_user(stage)
    password = provider_from_config(config).get(config.auth.password_prefix + user)
    return msgspec.structs.replace(config.bus, user=user, password=password, token=None, creds=None)
