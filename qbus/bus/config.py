"""Configuration: frozen structs from a TOML file and ``QBUS_*`` environment variables.

Nothing is read at import time. ``read_config`` parses; ``qbus.secrets.load_config``
(the CLI's and the stages' entry) parses and then reads the secrets the settings name.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import msgspec

from qbus.errors import ConfigError
from qbus.schemas.enums import DRIVERS

# A server URL: a scheme nats-py connects with, a host (name, IPv4 or [IPv6]) and an
# optional port; checked before connecting so a typo is a config error, not a timeout.
SERVER_URL_RE = re.compile(r"(nats|tls|ws|wss)://([^@/\s]+@)?(\[[0-9a-fA-F:.]+\]|[\w.-]+)(:\d+)?/?")


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the bus is and how its stream is laid out.

    Attributes:
        url: NATS server URL; several, comma-separated (``nats://a:4222,nats://b:4222``),
            as the nats CLI takes them, for a cluster.
        servers: The cluster's server URLs as a list; when set it is used instead of
            ``url``. A client connects to any of them and reconnects to another when
            its server goes away (docs/operations.md, "A cluster").
        replicas: Copies of the event log, every KV bucket and the object store kept by
            a JetStream cluster: 1 (one server) or 3 (a cluster of three or more). Set
            when an asset is created, and raised on an existing one; never lowered by
            provisioning (a lower setting is reported as a mismatch).
        placement_tags: Server tags the assets' replicas must be placed on (the servers'
            ``server_tags``), e.g. ``["ssd"]``; empty: anywhere in the cluster.
        user, password, token, creds: Optional NATS credentials.
        password_secret, token_secret: Names of secrets (``nats/ingest``) holding the
            password or token, read from the secrets provider by ``qbus.secrets.load_config`` so the
            value itself stays out of the TOML (docs/security.md).
        tls_ca: CA bundle that signs the server's certificate: connect with TLS.
        tls_cert, tls_key: Client certificate and key, for servers that verify clients.
        inbox_prefix: Reply-subject prefix; a tenant's NATS user may only subscribe to
            its own (``_INBOX_<tenant>``), so its client must use that prefix.
        prefix: Subject prefix (``qbus``).
        stream: JetStream stream holding ``<prefix>.>``: the event log.
        duplicate_window: Seconds the server remembers ``Nats-Msg-Id`` values; a redelivered
            input re-publishes the same ids within it and the copies are dropped.
        ack_wait: Seconds a stage has to finish a message before it is redelivered.
        max_deliver: Deliveries before a message is given up (the job then fails).
        results_ttl: Seconds a large result (a state vector in the object store) is
            kept; the store's TTL, set again at every provisioning (0: for ever).
        results_max_bytes: Quota of the result object store, bytes (0: none); a job
            whose result would not fit fails with ``result_store_full``.
    """

    url: str = "nats://127.0.0.1:4222"
    servers: tuple[str, ...] = ()
    replicas: int = 1
    placement_tags: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    password_secret: str | None = None
    token_secret: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    inbox_prefix: str | None = None
    prefix: str = "qbus"
    stream: str = "QBUS"
    duplicate_window: float = 1200.0
    ack_wait: float = 30.0
    max_deliver: int = 5
    results_ttl: float = 7 * 86_400.0
    results_max_bytes: int = 4 * 2**30

    def __post_init__(self) -> None:
        for server in self.server_urls:
            if not SERVER_URL_RE.fullmatch(server):
                raise ValueError(
                    f"server URL must look like nats://host:port, got {server!r} "
                    "(several servers: a comma-separated list, or [bus] servers = [...])"
                )
        if self.replicas not in (1, 3):
            # JetStream allows up to 5, but 3 is what survives one node and keeps a
            # quorum; 1 is the single server. Others are refused until someone needs them.
            raise ValueError(f"replicas must be 1 or 3, got {self.replicas}")
        if self.results_ttl < 0 or self.results_max_bytes < 0:
            raise ValueError("results_ttl and results_max_bytes must be 0 or more")
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
    def server_urls(self) -> list[str]:
        """The server URLs a client may connect to: ``servers``, else ``url`` split at
        commas (the form ``QBUS_URL`` and the nats CLI use)."""
        if self.servers:
            return [s.strip() for s in self.servers]
        return [s.strip() for s in self.url.split(",") if s.strip()]

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
    def tenant_stream(self) -> str:
        """Stream holding each tenant's copy of its final events (docs/security.md)."""
        return f"{self.stream}_TENANT"

    @property
    def audit_subject(self) -> str:
        return f"{self.prefix}_audit.chain"

    @property
    def advisory_stream(self) -> str:
        """Stream keeping the server's max-deliveries advisories for the event log's
        consumers, which stages turn into dead letters (qbus/bus/deadletter.py)."""
        return f"{self.stream}_ADVISORIES"

    @property
    def max_deliveries_advisories(self) -> str:
        """Subjects of those advisories (the last token is the consumer)."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.>"

    @property
    def kv_cache(self) -> str:
        """KV bucket with the result cache, keyed by the job's content (docs/routing.md)."""
        return f"{self.stream}_CACHE"

    @property
    def kv_chunks(self) -> str:
        """KV bucket with each chunked job's ledger and chunk results (docs/long-jobs.md)."""
        return f"{self.stream}_CHUNKS"

    @property
    def kv_chain(self) -> str:
        """KV bucket with the chain listener's block cursor and the anchor stage's
        pending batches (docs/chain.md)."""
        return f"{self.stream}_CHAIN"


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one job may ask for; beyond these a job is rejected before it runs.

    Attributes:
        max_source_bytes: Size of the submitted program text.
        max_qubits: Qubits for sampling.
        max_statevector_qubits: Qubits for a returned state vector (memory: 16 B × 2^n).
        max_shots: Shots per job.
        max_ops: Instructions per circuit.
        inline_statevector_qubits: Larger state vectors go to the object store.
        max_sweep_points: Parameter sets in one ``sweep`` job.
        max_tn_qubits: Qubits for a noiseless ``sample`` or ``expectation`` job past
            ``max_qubits`` or the memory cap: such a job goes to the router, which sends
            it to a tensor-network engine when its contraction cost is within limits
            (qbus/router/wide.py). 0 refuses them at ingest, as before.
    """

    max_source_bytes: int = 1_000_000
    max_qubits: int = 30
    max_statevector_qubits: int = 26
    max_shots: int = 10_000_000
    max_ops: int = 100_000
    inline_statevector_qubits: int = 20
    max_sweep_points: int = 100_000
    max_tn_qubits: int = 100


def machine_memory_mb() -> int:
    """This machine's memory in MiB, or its cgroup's (v2 ``memory.max``) when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    if limit.isdigit():
        total = min(total, int(limit))
    return total // 2**20


class HypervisorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How engine code is sandboxed (docs/hypervisor.md).

    A job's driver is its ``hypervisor`` field, or for ``auto`` the engine's entry in
    ``engines``, or ``default``; then raised to ``minimum`` if weaker. A job's limits are
    its own, clamped to the caps here; a job without limits gets the caps.

    Attributes:
        default: Driver for ``auto`` jobs of an engine not in ``engines``. ``inline``
            keeps small jobs as fast as the bus allows (no process hop); a job that
            sets a limit or is wider than ``inline_max_qubits`` runs under
            ``process`` instead, since ``inline`` enforces no limit.
        minimum: Weakest driver any job may run under (``bwrap`` for untrusted tenants).
        engines: Per-engine default driver, e.g. ``{"my-plugin" = "bwrap"}``.
        max_memory_mb: Memory cap per run, MiB; ingest rejects a job whose state vector
            cannot fit it. 0 (the default): half of this machine's memory (or of the
            cgroup's limit, when lower), read when the settings are made.
        inline_max_qubits: Widest job ``inline`` may run (wider ones go to
            ``process``, where the limits hold).
        max_cpu_seconds: CPU-time cap per run.
        max_wall_seconds: Wall-clock cap per run.
        pool_size: Warm worker processes per driver and executor.
    """

    default: str = "inline"
    minimum: str = "inline"
    engines: dict[str, str] = {}
    max_memory_mb: int = 0
    max_cpu_seconds: float = 3_600.0
    max_wall_seconds: float = 3_600.0
    inline_max_qubits: int = 20
    pool_size: int = 2

    def __post_init__(self) -> None:
        if self.max_memory_mb == 0:
            # One job may take half the machine: the executor, the bus and the other
            # stages keep the rest (docs/hypervisor.md).
            msgspec.structs.force_setattr(self, "max_memory_mb", machine_memory_mb() // 2)
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
        if self.inline_max_qubits < 0:
            raise ValueError("inline_max_qubits must be 0 or more")


class VaultConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An OpenBao/Vault KV v2 store (``[secrets.vault]``); secret ``a/b`` is read from
    ``<mount>/data/<path_prefix>/a/b``, field ``field``.

    Attributes:
        url: Server address.
        mount: KV v2 mount point.
        path_prefix: Path under the mount where qbus's secrets live.
        field: Key inside each secret's data holding the value.
        auth: ``token`` or ``approle``.
        token_env, token_file: Where the token is (``token`` auth): never in the TOML.
        role_id: AppRole role id (not secret by itself).
        secret_id_env, secret_id_file: Where the AppRole secret id is.
        namespace: Vault Enterprise / OpenBao namespace, if any.
        ca_cert: CA bundle for an https server.
        timeout: Seconds per HTTP request.
    """

    url: str = "http://127.0.0.1:8200"
    mount: str = "secret"
    path_prefix: str = "qbus"
    field: str = "value"
    auth: str = "token"
    token_env: str = "VAULT_TOKEN"
    token_file: str | None = None
    role_id: str | None = None
    secret_id_env: str = "QBUS_VAULT_SECRET_ID"
    secret_id_file: str | None = None
    namespace: str | None = None
    ca_cert: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.auth not in ("token", "approle"):
            raise ValueError(f"auth must be token or approle, got {self.auth!r}")
        if self.auth == "approle" and not self.role_id:
            raise ValueError("approle auth needs role_id")


class SecretsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where secrets come from (docs/security.md).

    Attributes:
        provider: ``env`` (``QBUS_SECRET_<KEY>`` variables), ``file`` (one file per
            key under ``directory``) or ``vault`` (OpenBao/Vault KV v2 through hvac).
        directory: For ``file``.
        cache_seconds: How long a value read from ``vault`` is reused; a rotated secret
            is seen at most this long after the change.
        environment: Environment variables set from secrets when the configuration is
            loaded, e.g. ``{AWS_ACCESS_KEY_ID = "aws/access_key_id"}`` for Braket.
        vault: For ``vault``.
    """

    provider: str = "env"
    directory: str = "/run/secrets/qbus"
    cache_seconds: float = 5.0
    environment: dict[str, str] = {}
    vault: VaultConfig = VaultConfig()

    def __post_init__(self) -> None:
        if self.provider not in ("env", "file", "vault"):
            raise ValueError(f"provider must be env, file or vault, got {self.provider!r}")
        if self.cache_seconds < 0:
            raise ValueError("cache_seconds must be 0 or more")


class TenantLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one tenant's jobs may ask for (``[tenants.<name>]``); beyond → JobRejected.

    Attributes:
        max_qubits: Qubits per job (``tenant_limit_qubits``).
        max_shots: Shots per sampling job (``tenant_limit_shots``).
        max_concurrent: Jobs of the tenant between ingest and their final event
            (``tenant_concurrency``).
    """

    max_qubits: int | None = None
    max_shots: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_qubits", "max_shots", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """NATS auth mode (docs/security.md): stages connect as their own users.

    Attributes:
        stage_users: A stage connects as the NATS user named like the stage
            (``ingest``, ``execute`` …) with the password in secret
            ``<password_prefix><stage>``, instead of ``[bus]``'s credentials.
        password_prefix: Prefix of those secrets' names.
    """

    stage_users: bool = False
    password_prefix: str = "nats/"


class AiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The AI assistant's model server: a local Ollama (docs/ai.md).

    Attributes:
        enabled: Use the model at all; when false, ``ai_optimize`` jobs get the
            deterministic result with ``verdict="unavailable"``.
        host: Ollama server URL.
        model: Model name as ``ollama pull`` knows it.
        timeout: Seconds one AI step (every request and retry of it) may take in all;
            the rewrite stage gives up after this and keeps the deterministic result.
        max_retries: Further attempts after an answer that does not parse or validate,
            each with the error fed back to the model.
        stream: Ask for streamed (NDJSON) answers rather than one JSON reply.
        max_ops: Circuits with more instructions than this are not sent to the model.
        max_check_qubits: Largest circuit the equivalence check takes on (the randomized
            check above 12 qubits costs ``2**n`` amplitudes per random input state).
        check_timeout: Seconds the equivalence check may take (it runs in a worker
            thread); an unfinished check rejects the proposal.
    """

    enabled: bool = True
    host: str = "http://127.0.0.1:11434"
    model: str = "qwen2.5-coder:7b"
    timeout: float = 60.0
    max_retries: int = 2
    stream: bool = True
    max_ops: int = 500
    max_check_qubits: int = 20
    check_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.check_timeout <= 0:
            raise ValueError("check_timeout must be positive")
        if not 1 <= self.max_check_qubits <= 26:
            raise ValueError("max_check_qubits must be 1..26")


class ChainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Ethereum chain results are anchored on (docs/chain.md).

    Attributes:
        rpc_url: JSON-RPC URL (``http://127.0.0.1:8545`` for anvil, a real network's
            endpoint), or ``eth-tester://NAME`` for an in-process py-evm chain that lives
            as long as the process (one process only: every stage that uses it must run
            in the same process, e.g. ``qbus demo`` or a ``Pipeline``).
        contract: Address of the deployed QbusAnchor; None deploys one when the stage or
            listener starts (fine for anvil and the in-process chain, not for a real
            network).
        batch_size: Results per Merkle batch at most: one anchor transaction each.
        batch_window: Seconds the first result of a batch waits for others before the
            batch is anchored anyway.
        confirmations: Blocks on top of a transaction or request before it counts.
        key_secret: Name of the secret holding the verifier account's private key
            (``QBUS_SECRET_CHAIN_VERIFIER_KEY`` with the env provider).
        poll_interval: Seconds between the listener's and receipt waits' polls.
        start_block: Block the listener starts from when it has no cursor yet.
        tx_timeout: Seconds to wait for a transaction to be mined.
        fetch_uris: Let the chain listener fetch a request's program from its http(s)
            URI (off: requests must carry the OpenQASM text; a URI is a request to
            fetch from wherever the requester likes).
    """

    rpc_url: str = "eth-tester://qbus"
    contract: str | None = None
    batch_size: int = 64
    batch_window: float = 2.0
    confirmations: int = 0
    key_secret: str = "chain/verifier_key"
    poll_interval: float = 1.0
    start_block: int = 0
    tx_timeout: float = 120.0
    fetch_uris: bool = False

    def __post_init__(self) -> None:
        if not self.rpc_url.startswith(("eth-tester://", "http://", "https://")):
            raise ValueError("rpc_url must be an http(s):// JSON-RPC URL or eth-tester://NAME")
        if self.contract is not None and not (
            len(self.contract) == 42
            and self.contract.startswith("0x")
            and all(c in "0123456789abcdefABCDEF" for c in self.contract[2:])
        ):
            raise ValueError(f"contract must be a 0x-prefixed 20-byte address: {self.contract!r}")
        if self.batch_size < 1 or self.batch_window <= 0:
            raise ValueError("batch_size must be at least 1 and batch_window positive")
        if self.confirmations < 0 or self.start_block < 0:
            raise ValueError("confirmations and start_block must be 0 or more")
        if self.poll_interval <= 0 or self.tx_timeout <= 0:
            raise ValueError("poll_interval and tx_timeout must be positive")


class VerifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The verify stage's cross-engine agreement policy (docs/audit.md).

    A job is re-run on a second engine when it asks (``cross_check``) or when it falls
    in the random sample; the sample is drawn from the job id, so a redelivered result
    gets the same decision.

    Attributes:
        cross_check_rate: Fraction of all jobs cross-checked (0: only jobs that ask).
        cross_check_engines: Second engines in order of preference; the first one that
            is installed, is not the job's own engine and accepts the job runs it.
        cross_check_alpha: Significance level of the two-sample counts test.
    """

    cross_check_rate: float = 0.0
    cross_check_engines: tuple[str, ...] = ("qiskit-aer", "reference", "cirq", "jax")
    cross_check_alpha: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.cross_check_rate <= 1.0:
            raise ValueError("cross_check_rate must be in 0..1")
        if not 0.0 < self.cross_check_alpha < 1.0:
            raise ValueError("cross_check_alpha must be in (0, 1)")


class ObservabilityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Metrics endpoints (``[observability]``; docs/observability.md). Tracing is set by
    the standard ``OTEL_*`` variables instead.

    Attributes:
        metrics_port: First ``/metrics`` port of ``qbus up``: each stage process takes the
            next free one from here (0: any free port; -1: no endpoints).
        metrics_addr: Address the endpoints listen on.
        consumer_poll_seconds: How often a stage reads its consumer's pending counts.
    """

    metrics_port: int = 9464
    metrics_addr: str = "127.0.0.1"
    consumer_poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be -1..65535, got {self.metrics_port}")
        if self.consumer_poll_seconds < 0:
            raise ValueError("consumer_poll_seconds must be >= 0 (0: never)")


class CacheConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The result cache (``[cache]``; docs/routing.md).

    Attributes:
        enabled: Answer a job whose result is cached without running it.
        ttl_seconds: How long a cached result lives (the KV bucket's TTL, set when the
            bucket is created).
        version_policy: ``exact``: a hit needs the engine version that made the result
            to be the installed one; ``any``: any version of the engine.
    """

    enabled: bool = True
    ttl_seconds: float = 86_400.0
    version_policy: str = "exact"

    def __post_init__(self) -> None:
        if self.ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if self.version_policy not in ("exact", "any"):
            raise ValueError(
                f"version_policy must be 'exact' or 'any', got {self.version_policy!r}"
            )


class ChunksConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Long jobs in chunks (``[chunks]``; docs/long-jobs.md).

    Attributes:
        points: Points per chunk of a ``sweep`` job that sets no ``chunk_size``; a sweep
            with more points is split into chunks of at most this many.
        max_chunks: Most chunks one job is split into (chunks grow to fit).
        ttl_days: A chunk ledger or chunk result is dropped this many days after its
            last write (the chunk bucket's TTL, fixed when the bucket is created); 0
            keeps them. The event log keeps every chunk's result either way.
        shot_seconds: Target run time of one shot chunk: a ``sample`` job whose circuit
            runs shot by shot (mid-circuit measurement, reset after a gate, classical
            control) and whose predicted run time is above this is split into chunks
            of shots of about this many seconds each, which any executor copies run
            in parallel.
        min_shots: Fewest shots in a shot chunk (a job with fewer shots than twice this
            is never split by its predicted time).
    """

    points: int = 64
    max_chunks: int = 4096
    ttl_days: float = 30.0
    shot_seconds: float = 5.0
    min_shots: int = 64

    def __post_init__(self) -> None:
        if self.points < 1:
            raise ValueError("points must be >= 1")
        if not self.shot_seconds > 0:
            raise ValueError("shot_seconds must be > 0")
        if self.min_shots < 1:
            raise ValueError("min_shots must be >= 1")
        if self.max_chunks < 1:
            raise ValueError("max_chunks must be >= 1")
        if self.ttl_days < 0:
            raise ValueError("ttl_days must be >= 0 (0 keeps chunk ledgers for ever)")

    @property
    def ttl_seconds(self) -> float:
        """The chunk bucket's TTL in seconds (0: none)."""
        return self.ttl_days * 86_400.0


class RetriesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries and dead letters (``[retries]``; docs/operations.md).

    Attributes:
        max_attempts: Runs of a job's execution in all when its engine fails with a
            transient (``retryable``) error; after the last one the job fails with the
            engine's code. 1: never retry.
        base_delay: Seconds before the first retry; each further one waits twice as long.
        max_delay: Cap on one retry's wait.
        redeliver_delay: Seconds before a message whose handler raised unexpectedly is
            delivered again (doubling per delivery, capped at ``max_delay``); after
            ``[bus] max_deliver`` deliveries it becomes a dead letter.
        dead_letter_advisories: Turn the server's max-deliveries advisories (a handler
            that never finished, a stage process that died on the message) into dead
            letters too.
        dead_letter_grace: Seconds after such an advisory before the message counts as
            lost; acked by then, or its job ended by then, it is left alone (a holder
            whose keep-alives were late on a starved machine may still finish it).
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    redeliver_delay: float = 1.0
    dead_letter_advisories: bool = True
    dead_letter_grace: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.redeliver_delay < 0:
            raise ValueError("base_delay and redeliver_delay must be 0 or more")
        if self.dead_letter_grace < 0:
            raise ValueError("dead_letter_grace must be 0 or more")
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1 for the first retry)."""
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))

    def redelivery_delay(self, delivered: int) -> float:
        """Seconds before delivery ``delivered + 1`` of a message whose handler raised."""
        return min(self.max_delay, self.redeliver_delay * 2 ** max(0, delivered - 1))


class SigningConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Stage signatures on events (``[signing]``; docs/security.md, qbus/bus/signing.py).

    Attributes:
        enabled: Stages sign what they publish when they have a key, and verifiers check
            final events and execution results when they have the public keys.
        key_prefix: A stage's private key is secret ``<key_prefix><stage>`` (a base64
            Ed25519 seed), from the secrets provider, else from ``<state_dir>`` where
            ``qbus up`` writes dev keys.
        public_keys: The trusted set of the stages' public keys (JSON, stage -> base64
            key); "" is ``<state_dir>/signing/public.json``, written by ``qbus up``.
    """

    enabled: bool = True
    key_prefix: str = "signing/"
    public_keys: str = ""


class LanesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Heavy jobs in their own executor lane (``[lanes]``; docs/routing.md, "Heavy lane").

    Attributes:
        heavy_seconds: A job whose predicted run time on its engine (the whole job, all
            chunks together) is at least this many seconds goes to the heavy lane, so it
            never holds up light jobs. ``inf`` turns the heavy lane off.
        heavy_slots: Heavy runs one executor process runs at once, each in its own
            sandbox worker, beside its light lane.
        heavy_nice: Niceness (0-19) of the worker processes that run heavy jobs: the
            light lane keeps the CPU on a small machine. 0 leaves it at the executor's.
        heavy_idle: Run those workers under Linux's ``SCHED_IDLE`` policy too: they get
            a CPU only when no other task wants it, and a light job's stage that wakes
            takes the CPU at once (niceness alone still let each hop wait behind a
            heavy run; benchmarks/fairness.py, docs/routing.md). Ignored where the OS has
            no such policy.
    """

    heavy_seconds: float = 10.0
    heavy_slots: int = 1
    heavy_nice: int = 10
    heavy_idle: bool = True

    def __post_init__(self) -> None:
        if not self.heavy_seconds > 0:
            raise ValueError("heavy_seconds must be > 0 (inf turns the heavy lane off)")
        if self.heavy_slots < 1:
            raise ValueError("heavy_slots must be >= 1")
        if not 0 <= self.heavy_nice <= 19:
            raise ValueError("heavy_nice must be between 0 and 19")


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP gateway (``[gateway]``, docs/gateway.md).

    Attributes:
        host, port: Where ``qbus gateway`` listens (loopback by default: bind another
            address only behind TLS).
        max_body_bytes: Largest request body; a bigger one is refused with 413 before
            it is read (by its Content-Length, or as it streams in).
        tenants: Tenants that may call the gateway; with any, every request needs a
            bearer token. Tenant ``T``'s token is secret ``<token_prefix>T``.
        token_prefix: Prefix of those secrets' names.
        admin_token_secret: Secret holding the operator's token, which sees every job
            (and the whole log's audit); None: no such token.
        lookup_seconds: How long a request about a job the bus does not know yet waits
            for it to appear (a job POSTed a moment ago that ingest has not read) before
            answering 404.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 << 20
    tenants: list[str] = []
    token_prefix: str = "gateway/"
    admin_token_secret: str | None = None
    lookup_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.lookup_seconds < 0:
            raise ValueError("lookup_seconds must be 0 or more")


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """All of qbus's settings."""

    bus: BusConfig = BusConfig()
    limits: Limits = Limits()
    # A factory, so the machine's memory (the default cap) is read when settings are
    # made, never at import.
    hypervisor: HypervisorConfig = msgspec.field(default_factory=HypervisorConfig)
    secrets: SecretsConfig = SecretsConfig()
    auth: AuthConfig = AuthConfig()
    tenants: dict[str, TenantLimits] = {}
    chain: ChainConfig = ChainConfig()
    ai: AiConfig = AiConfig()
    verify: VerifyConfig = VerifyConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    cache: CacheConfig = CacheConfig()
    chunks: ChunksConfig = ChunksConfig()
    lanes: LanesConfig = LanesConfig()
    retries: RetriesConfig = RetriesConfig()
    signing: SigningConfig = SigningConfig()
    gateway: GatewayConfig = GatewayConfig()
    state_dir: str = ".qbus"


_ENV_MAP = {
    "QBUS_URL": ("bus", "url"),
    "QBUS_REPLICAS": ("bus", "replicas"),
    "QBUS_USER": ("bus", "user"),
    "QBUS_PASSWORD": ("bus", "password"),
    "QBUS_TOKEN": ("bus", "token"),
    "QBUS_CREDS": ("bus", "creds"),
    "QBUS_TLS_CA": ("bus", "tls_ca"),
    "QBUS_SECRETS_PROVIDER": ("secrets", "provider"),
    "QBUS_VAULT_URL": ("secrets", "vault", "url"),
    "QBUS_PREFIX": ("bus", "prefix"),
    "QBUS_STREAM": ("bus", "stream"),
    "QBUS_STATE_DIR": ("state_dir",),
    "QBUS_HYPERVISOR_MINIMUM": ("hypervisor", "minimum"),
    "QBUS_CHAIN_RPC_URL": ("chain", "rpc_url"),
    "QBUS_CHAIN_CONTRACT": ("chain", "contract"),
    "QBUS_AI_HOST": ("ai", "host"),
    "QBUS_AI_MODEL": ("ai", "model"),
}


# Variables whose setting is a number, not text.
_ENV_INTS = frozenset({"QBUS_REPLICAS"})


def _env_value(var: str, value: str) -> str | int:
    if var not in _ENV_INTS:
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{var} must be a whole number, got {value!r}") from None


def read_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read settings from a TOML file (``QBUS_CONFIG`` or ``path``) then ``QBUS_*`` variables.

    Secrets the settings name are not read here (``qbus.secrets.load_config`` does both):
    the secrets providers are configured by these settings, so they sit above them.

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
            node[keys[-1]] = _env_value(var, env[var])
    if "QBUS_URL" in env and isinstance(raw.get("bus"), dict):
        # The variable names the servers (a comma-separated list for a cluster): it
        # replaces the file's list too, as it replaces the file's url.
        raw["bus"].pop("servers", None)
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
