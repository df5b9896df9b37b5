"""NATS auth mode: users, subject permissions and dev TLS certificates (docs/security.md).

``qbus auth init`` writes, under one directory (``.qbus/auth`` by default):

* ``nats-auth.conf`` — nats-server config from ``nats-auth.conf.tmpl``: an ``admin`` user,
  one user per stage and one per tenant, each with the subjects it may use;
* ``secrets/nats/<user>`` — each user's password, laid out for the ``file`` secrets
  provider (``[secrets] provider = "file"``) or to be copied into Vault;
* ``tls/`` (with ``--tls``) — a dev CA, and a server certificate for 127.0.0.1/localhost;
* ``qbus.toml`` and ``tenant-<name>.toml`` — configs for the stages and for each tenant.

The tenant subject scheme: tenant ``A`` publishes JobSubmitted on ``qbus.submit.A`` (ingest
takes the tenant from the subject, which only A may publish to) and reads its final
events on ``qbus_tenant.A.result.<job>``; its reply inbox is ``_INBOX_A.>``. It can touch nothing
else: not ``qbus.exec.>``, not another tenant's results, not the stages' consumers.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from qbus.bus.subjects import Subjects
from qbus.errors import ConfigError

TEMPLATE = Path(__file__).with_name("nats-auth.conf.tmpl")
TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_TENANT_RE = re.compile(TENANT_PATTERN)
STAGES = ("ingest", "rewrite", "route", "execute", "verify", "audit", "control")
ADMIN = "admin"


def is_valid_tenant(name: str) -> bool:
    """True when ``name`` can be a tenant: one subject token, a KV key part, a user name."""
    return bool(_TENANT_RE.match(name))


def tenant_user(tenant: str) -> str:
    """The NATS user of a tenant."""
    return f"tenant-{tenant}"


def tenant_inbox(tenant: str) -> str:
    """The reply-subject prefix a tenant's client must use (``BusConfig.inbox_prefix``)."""
    return f"_INBOX_{tenant}"


def _stage_outputs(stage: str, s: Subjects) -> list[str]:
    """Subjects a stage publishes events on; every stage may end a job (Reject/Fail)."""
    # Any stage run by StageRunner may also dead-letter a message (qbus/bus/deadletter.py).
    final = [s.result(), s.tenant_result("*", "*"), s.dlq_all()]
    match stage:
        case "ingest":
            # Refusals: answers to messages on a submit subject that hold no job.
            return [s.ingested(), s.refused(), s.tenant_refused(), *final]
        case "rewrite":
            return [s.rewritten(), *final]
        case "route":
            return [s.exec(), s.exec_all(), s.control(), *final]
        case "execute":
            return [s.executed(), *final]
        case "verify":
            # exec: a transient engine failure is run again (qbus/consumers/retry.py).
            return [*final, s.anchored(), s.exec_all()]
        case "audit":
            return []
        case "control":
            # Rerouted chunks, refusals, and a cancel's JobFailed (docs/long-jobs.md).
            return [s.exec(), s.exec_all(), s.control(), *final]
    # A stage qbus does not know (a chain anchor, a scheduler): any qbus event subject.
    return [s.all]


def stage_permissions(stage: str, *, prefix: str = "qbus", stream: str = "QBUS") -> dict:
    """The NATS permissions of stage ``stage``'s user.

    A stage is trusted code: it may use the JetStream API (create its durable consumer,
    provision the stream and buckets, read other events back), ack, write job state and
    results, and subscribe to the shared ``_INBOX.>`` for replies. What it may *publish*
    events on is limited to its own outputs.
    """
    s = Subjects(prefix)
    publish = [
        "$JS.API.>",
        "$JS.ACK.>",
        "$JS.FC.>",
        "$KV.>",
        "$O.>",
        *_stage_outputs(stage, s),
    ]
    if stage == "audit":
        publish.append(f"{prefix}_audit.chain")
    return {"publish": {"allow": publish}, "subscribe": {"allow": ["_INBOX.>"]}}


def tenant_permissions(tenant: str, *, prefix: str = "qbus", stream: str = "QBUS") -> dict:
    """The NATS permissions of tenant ``tenant``'s user.

    Publish: its submit subject, and the one JetStream call whose API subject names the
    message subject, so a permission can scope it: direct get of its own stored results.
    Subscribe: its results and its own inbox. Everything else is denied — JetStream
    consumers included (their create request does not always name the subject).
    """
    s = Subjects(prefix)
    results = s.tenant_all(tenant)
    return {
        "publish": {
            "allow": [
                s.submit_for(tenant),
                f"$JS.API.DIRECT.GET.{stream}_TENANT.{results}",
            ]
        },
        "subscribe": {"allow": [results, f"{tenant_inbox(tenant)}.>"]},
    }


ADMIN_PERMISSIONS = {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}


@dataclass
class AuthFiles:
    """What ``init_auth`` wrote.

    Attributes:
        directory: Where everything is.
        conf: The nats-server config (``NatsServer(config=…)``, ``qbus up --nats-config``).
        secrets_dir: Directory for the ``file`` secrets provider (``nats/<user>`` files).
        users: Every user name.
        tenants: The tenants.
        tls_ca, tls_cert, tls_key: Dev CA and server certificate/key, with ``tls``.
    """

    directory: Path
    conf: Path
    secrets_dir: Path
    users: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def password(self, user: str) -> str:
        """The password of ``user`` (read from its secret file)."""
        return (self.secrets_dir / "nats" / user).read_text().strip()


def _write_private(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _password(secrets_dir: Path, user: str, rotate: bool) -> str:
    """The user's password: kept from an earlier run unless rotating, else a new one."""
    path = secrets_dir / "nats" / user
    if path.is_file() and not rotate:
        return path.read_text().strip()
    # A letter first: nats-server parses a variable's value (the chart's `$QBUS_NATS_<USER>`)
    # as a config value, and a token that began "2021-" or "1e5" read as a date or a number
    # (tests/test_deploy.py met one: "All ISO8601 dates must be in full Zulu form").
    value = "q" + secrets.token_urlsafe(24)
    _write_private(path, value + "\n")
    return value


def init_auth(
    directory: str | Path,
    tenants: list[str],
    *,
    tls: bool = False,
    prefix: str = "qbus",
    stream: str = "QBUS",
    stages: tuple[str, ...] = STAGES,
    rotate: bool = False,
) -> AuthFiles:
    """Write the auth-mode nats-server config, passwords, configs and (``tls``) certificates.

    Passwords already in ``directory`` are kept unless ``rotate``, so adding a tenant does
    not log everyone else out.

    Raises:
        ConfigError: A tenant or stage name that cannot be a subject token.
    """
    for name in (*tenants, *stages):
        if not is_valid_tenant(name):
            raise ConfigError(f"{name!r} is not a valid tenant/stage name ({TENANT_PATTERN})")
    directory = Path(directory).resolve()
    secrets_dir = directory / "secrets"
    files = AuthFiles(
        directory=directory, conf=directory / "nats-auth.conf", secrets_dir=secrets_dir
    )
    users: list[dict] = []

    def add(user: str, permissions: dict) -> None:
        users.append(
            {
                "user": user,
                "password": _password(secrets_dir, user, rotate),
                "permissions": permissions,
            }
        )
        files.users.append(user)

    add(ADMIN, ADMIN_PERMISSIONS)
    for stage in stages:
        add(stage, stage_permissions(stage, prefix=prefix, stream=stream))
    for tenant in tenants:
        add(tenant_user(tenant), tenant_permissions(tenant, prefix=prefix, stream=stream))
        files.tenants.append(tenant)
    tls_block = ""
    if tls:
        files.tls_ca, files.tls_cert, files.tls_key = make_dev_certificates(directory / "tls")
        # verify: false — clients authenticate with passwords; the CA proves the server.
        tls_block = (
            "tls {\n"
            f"  cert_file: {json.dumps(str(files.tls_cert))}\n"
            f"  key_file: {json.dumps(str(files.tls_key))}\n"
            f"  ca_file: {json.dumps(str(files.tls_ca))}\n"
            "  timeout: 5\n"
            "}\n"
        )
    # JSON is valid nats-server config syntax, and quoting keeps "$JS…" from being read
    # as a variable reference.
    text = string.Template(TEMPLATE.read_text()).substitute(
        users=json.dumps(users, indent=2), tls=tls_block
    )
    _write_private(files.conf, text)
    _write_configs(files, prefix=prefix, stream=stream)
    return files


def _write_configs(files: AuthFiles, *, prefix: str, stream: str) -> None:
    tls = f"tls_ca = {json.dumps(str(files.tls_ca))}\n" if files.tls_ca else ""
    url = "tls://127.0.0.1:4222" if files.tls_ca else "nats://127.0.0.1:4222"
    secrets_block = (
        f'[secrets]\nprovider = "file"\ndirectory = {json.dumps(str(files.secrets_dir))}\n'
    )
    _write_private(
        files.directory / "qbus.toml",
        f'[bus]\nurl = "{url}"\nprefix = "{prefix}"\nstream = "{stream}"\n'
        f'user = "{ADMIN}"\npassword_secret = "nats/{ADMIN}"\n{tls}\n'
        f"[auth]\nstage_users = true\n\n{secrets_block}",
    )
    for tenant in files.tenants:
        _write_private(
            files.directory / f"tenant-{tenant}.toml",
            f'[bus]\nurl = "{url}"\nprefix = "{prefix}"\nstream = "{stream}"\n'
            f'user = "{tenant_user(tenant)}"\npassword_secret = "nats/{tenant_user(tenant)}"\n'
            f'inbox_prefix = "{tenant_inbox(tenant)}"\n{tls}\n{secrets_block}',
        )


def make_dev_certificates(directory: str | Path, *, days: int = 365) -> tuple[Path, Path, Path]:
    """A dev CA and a server certificate for ``127.0.0.1``/``localhost`` signed by it.

    For development and tests only: the CA key is written next to the certificates.

    Returns:
        (CA certificate, server certificate, server key) paths, PEM.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbus dev CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbus nats-server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
    )
    _write_private(ca_path, ca.public_bytes(pem))
    _write_private(cert_path, cert.public_bytes(pem))
    _write_private(
        key_path,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    _write_private(
        directory / "ca-key.pem",
        ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return ca_path, cert_path, key_path
