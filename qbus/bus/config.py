"""Configuration: frozen structs from a TOML file and ``QBUS_*`` environment variables.

Nothing is read at import time; ``load_config`` is called by the CLI and by stages.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import msgspec

from qbus.errors import ConfigError


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the bus is and how its stream is laid out.

    Attributes:
        url: NATS server URL.
        user, password, token, creds: Optional NATS credentials.
        prefix: Subject prefix (``qbus``).
        stream: JetStream stream holding ``<prefix>.>``: the event log.
        duplicate_window: Seconds the server remembers ``Nats-Msg-Id`` values; a redelivered
            input re-publishes the same ids within it and the copies are dropped.
        ack_wait: Seconds a stage has to finish a message before it is redelivered.
        max_deliver: Deliveries before a message is given up (the job then fails).
    """

    url: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    prefix: str = "qbus"
    stream: str = "QBUS"
    duplicate_window: float = 1200.0
    ack_wait: float = 30.0
    max_deliver: int = 5

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in " .*>"):
            raise ValueError(f"prefix must be one subject token, got {self.prefix!r}")
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if self.duplicate_window < self.ack_wait * self.max_deliver:
            # Redeliveries must stay inside the dedupe window or a retried stage could
            # publish a second final event.
            raise ValueError(
                "duplicate_window must cover ack_wait * max_deliver "
                f"({self.ack_wait * self.max_deliver:.0f} s)"
            )

    @property
    def kv_jobs(self) -> str:
        """KV bucket with each job's current state."""
        return f"{self.stream}_JOBS"

    @property
    def object_store(self) -> str:
        """Object store for large results (state vectors)."""
        return f"{self.stream}_RESULTS"

    @property
    def audit_stream(self) -> str:
        """Stream holding the audit hash chain (outside ``<prefix>.>`` on purpose)."""
        return f"{self.stream}_AUDIT"

    @property
    def audit_subject(self) -> str:
        return f"{self.prefix}_audit.chain"


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one job may ask for; beyond these a job is rejected before it runs.

    Attributes:
        max_source_bytes: Size of the submitted program text.
        max_qubits: Qubits for sampling.
        max_statevector_qubits: Qubits for a returned state vector (memory: 16 B × 2^n).
        max_shots: Shots per job.
        max_ops: Instructions per circuit.
        inline_statevector_qubits: Larger state vectors go to the object store.
    """

    max_source_bytes: int = 1_000_000
    max_qubits: int = 30
    max_statevector_qubits: int = 26
    max_shots: int = 10_000_000
    max_ops: int = 100_000
    inline_statevector_qubits: int = 20


DRIVERS = ("inline", "process", "bwrap")
"""Sandbox drivers, weakest isolation first: ``minimum`` compares along this order."""


class HypervisorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How engine code is sandboxed (docs/hypervisor.md).

    A job's driver is its ``hypervisor`` field, or for ``auto`` the engine's entry in
    ``engines``, or ``default``; then raised to ``minimum`` if weaker. A job's limits are
    its own, clamped to the caps here; a job without limits gets the caps.

    Attributes:
        default: Driver for ``auto`` jobs of an engine not in ``engines``. ``inline``
            keeps small jobs as fast as the bus allows (no process hop).
        minimum: Weakest driver any job may run under (``bwrap`` for untrusted tenants).
        engines: Per-engine default driver, e.g. ``{"my-plugin" = "bwrap"}``.
        max_memory_mb: Memory cap per run, MiB; ingest rejects a job whose state vector
            cannot fit it.
        max_cpu_seconds: CPU-time cap per run.
        max_wall_seconds: Wall-clock cap per run.
        pool_size: Warm worker processes per driver and executor.
    """

    default: str = "inline"
    minimum: str = "inline"
    engines: dict[str, str] = {}
    max_memory_mb: int = 32_768
    max_cpu_seconds: float = 3_600.0
    max_wall_seconds: float = 3_600.0
    pool_size: int = 2

    def __post_init__(self) -> None:
        for field, value in (
            ("default", self.default),
            ("minimum", self.minimum),
            *((f"engines.{k}", v) for k, v in self.engines.items()),
        ):
            if value not in DRIVERS:
                raise ValueError(f"{field} must be one of {', '.join(DRIVERS)}, got {value!r}")
        if self.max_memory_mb < 16 or self.max_cpu_seconds <= 0 or self.max_wall_seconds <= 0:
            raise ValueError("max_memory_mb must be >= 16 and the time caps positive")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")


class SecretsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where secrets come from (docs/security.md).

    Attributes:
        provider: ``env`` (``QBUS_SECRET_<KEY>`` variables), ``file`` (one file per
            key under ``directory``) or ``vault`` (OpenBao/Vault KV v2 through hvac).
        directory: For ``file``.
    """

    provider: str = "env"
    directory: str = "/run/secrets/qbus"


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """All of qbus's settings."""

    bus: BusConfig = BusConfig()
    limits: Limits = Limits()
    hypervisor: HypervisorConfig = HypervisorConfig()
    secrets: SecretsConfig = SecretsConfig()
    state_dir: str = ".qbus"


_ENV_MAP = {
    "QBUS_URL": ("bus", "url"),
    "QBUS_USER": ("bus", "user"),
    "QBUS_PASSWORD": ("bus", "password"),
    "QBUS_TOKEN": ("bus", "token"),
    "QBUS_CREDS": ("bus", "creds"),
    "QBUS_PREFIX": ("bus", "prefix"),
    "QBUS_STREAM": ("bus", "stream"),
    "QBUS_STATE_DIR": ("state_dir",),
    "QBUS_HYPERVISOR_MINIMUM": ("hypervisor", "minimum"),
}


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read settings from a TOML file (``QBUS_CONFIG`` or ``path``) then ``QBUS_*`` variables.

    Raises:
        ConfigError: Unknown keys, wrong types or impossible combinations, naming the field.
    """
    env = dict(os.environ) if env is None else env
    raw: dict = {}
    path = path or env.get("QBUS_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    for var, keys in _ENV_MAP.items():
        if var in env:
            node = raw
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = env[var]
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
