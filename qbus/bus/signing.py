"""Stage signatures: which stage wrote an event, provable without NATS auth.

Every stage holds an Ed25519 key (from the secrets provider, ``signing/<stage>``; ``qbus
up`` writes dev keys into its state directory) and signs each event it publishes: the
``Qbus-Signature`` header is ``<stage>:<base64 signature>`` over the subject, the
``Nats-Msg-Id`` and the payload. Verifiers (``qbus audit verify``, the client, the stages
that consume results) hold the stages' public keys, a fixed trusted set read from a file
(``[signing] public_keys``, by default ``<state_dir>/signing/public.json``), and accept a
final event (a refusal too), an execution result, or an event a job's work is driven by
(``circuit.ingested``, ``circuit.rewritten``, ``execution.requested``) only when it is
signed by a stage allowed to write it (``WRITERS``) whose name is the event's
``producer``. A stage ignores one that is not (qbus/bus/runner.py). Anyone who can
publish on the bus can still write a message, but not one that verifies:
docs/security.md.

``cryptography`` (the ``security`` extra) is imported when keys are loaded, not with this
module: a deployment without it runs unsigned, and says so.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from qbus.bus.config import Config
from qbus.errors import ConfigError
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.events import (
    CircuitIngested,
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

HEADER = "Qbus-Signature"
"""The NATS header carrying ``<stage>:<base64 signature>``."""

PUBLIC_KEYS = Path("signing") / "public.json"
"""Where ``qbus up`` writes the stages' public keys, under its state directory."""

KEY_STAGES = ("ingest", "rewrite", "route", "execute", "verify", "audit", "anchor", "control")
"""Stages with a key of their own (every executor, of any engine, is ``execute``)."""

# The stages allowed to write each checked event type. A stage's own handler failure
# (a dead letter, retries given up) ends the job from whichever stage it happened in.
RESULT_WRITERS: dict[type[Event], frozenset[str]] = {
    JobCompleted: frozenset({"verify", "route"}),  # route: a result-cache hit
    JobRejected: frozenset({"ingest", "rewrite", "route"}),  # a refusal too
    JobFailed: frozenset({"verify", "control", "route"}),  # control: a cancel
    ExecutionCompleted: frozenset({"execute"}),
    ExecutionFailed: frozenset({"execute"}),
}
# The events a job's work is driven by: the stage that reads one acts on what it says
# (rewrites it, routes it, runs it and signs the result), so it counts only from the
# stage allowed to write it; else anyone who can publish could start a run.
STEP_WRITERS: dict[type[Event], frozenset[str]] = {
    CircuitIngested: frozenset({"ingest"}),
    CircuitRewritten: frozenset({"rewrite"}),
    # verify: a retry of a failed run; control: a reroute to another engine.
    ExecutionRequested: frozenset({"route", "verify", "control"}),
}
WRITERS: dict[type[Event], frozenset[str]] = {**RESULT_WRITERS, **STEP_WRITERS}
"""Every event type that needs provenance, and the stages that may write it."""
ANY_STAGE_FAILURES = frozenset({"dead_lettered", "retries_exhausted"})
"""JobFailed codes any stage writes (qbus/bus/runner.py, qbus/bus/deadletter.py)."""


def _signed_bytes(subject: str, msg_id: str, payload: bytes) -> bytes:
    return b"\n".join((subject.encode(), msg_id.encode(), payload))


def writers(event: Event) -> frozenset[str] | None:
    """The stages allowed to write ``event`` (None: any writer; it needs no provenance)."""
    allowed = WRITERS.get(type(event))
    if isinstance(event, JobFailed) and event.code in ANY_STAGE_FAILURES:
        return frozenset(KEY_STAGES)
    return allowed


class Signer:
    """A stage's private key: signs what the stage publishes.

    Args:
        stage: The stage name the header carries.
        key: Its Ed25519 private key.
    """

    def __init__(self, stage: str, key: Ed25519PrivateKey) -> None:
        self.stage = stage
        self._key = key

    @classmethod
    def from_secret(cls, stage: str, value: str) -> Signer:
        """The signer for a secret holding the base64 32-byte Ed25519 seed.

        Raises:
            ConfigError: Not such a key, or ``cryptography`` is not installed.
        """
        private_key_class = _ed25519()[0]
        try:
            return cls(stage, private_key_class.from_private_bytes(base64.b64decode(value)))
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(f"signing key of stage {stage!r} is not a base64 seed") from exc

    def header(self, subject: str, msg_id: str, payload: bytes) -> str:
        """The ``Qbus-Signature`` value for a message."""
        signature = self._key.sign(_signed_bytes(subject, msg_id, payload))
        return f"{self.stage}:{base64.b64encode(signature).decode()}"

    def copy_headers(self, event: Event, origin: str, payload: bytes) -> dict[str, str]:
        """Headers for a copy of ``event`` (``payload``, first stored on ``origin``) kept
        elsewhere, such as a tenant's copy of its final event: the event id as the
        ``Nats-Msg-Id``, and, when this stage wrote the event, the signature the original
        carries (over ``origin``), so a reader verifies the copy as the original
        (``Trust.problem`` with ``origin``). Ed25519 signatures are deterministic: it is
        the same header, byte for byte."""
        headers = {"Nats-Msg-Id": event.event_id}
        if _produced_by(event.producer, self.stage):
            headers[HEADER] = self.header(origin, event.event_id, payload)
        return headers


class Trust:
    """The stages' public keys: who may have written a message.

    Args:
        keys: Stage name -> its public key.
    """

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: str | Path) -> Trust:
        """The trusted set in a JSON file ``{"<stage>": "<base64 public key>", …}``.

        Raises:
            ConfigError: Unreadable file or key, or ``cryptography`` is not installed.
        """
        public_key_class = _ed25519()[1]
        try:
            raw = json.loads(Path(path).read_text())
            return cls(
                {s: public_key_class.from_public_bytes(base64.b64decode(k)) for s, k in raw.items()}
            )
        except (OSError, ValueError, AttributeError, binascii.Error) as exc:
            raise ConfigError(f"cannot read the stages' public keys from {path}: {exc}") from exc

    def signer_of(
        self, subject: str, msg_id: str, payload: bytes, header: str | None
    ) -> str | None:
        """The stage whose valid signature ``header`` is (None: missing, unknown or wrong)."""
        stage, _, signature = (header or "").partition(":")
        key = self.keys.get(stage)
        if key is None:
            return None
        try:
            key.verify(base64.b64decode(signature), _signed_bytes(subject, msg_id, payload))
        except (ValueError, binascii.Error, _invalid_signature()):
            return None
        return stage

    def problem(
        self, event: Event, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> str | None:
        """Why ``event``, stored as ``payload`` on ``subject`` with ``headers``, does not
        count (None: it does, or it needs no provenance)."""
        allowed = writers(event)
        if allowed is None:
            return None
        headers = headers or {}
        header = headers.get(HEADER)
        stage = self.signer_of(subject, headers.get("Nats-Msg-Id", ""), payload, header)
        if stage is None:
            why = "no stage signature" if not header else "a signature no trusted stage key made"
            return f"{why}: not written by a qbus stage (forged?)"
        if not _produced_by(event.producer, stage):
            return f"signed by stage {stage} but claims producer {event.producer!r}"
        if stage not in allowed:
            return f"stage {stage} may not write it (only {', '.join(sorted(allowed))})"
        return None

    def message_problem(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> str | None:
        """``problem`` for a stored message of a subject that holds checked events (final
        events, refusals, ``circuit.ingested`` …); one that is no qbus event at all does
        not count either."""
        try:
            event = decode_event(payload)
        except UNDECODABLE:
            return "not a qbus event"
        return self.problem(event, subject, payload, headers)


def producer_stage(producer: str) -> str | None:
    """The key stage (``KEY_STAGES``) whose events carry ``producer``
    (``qbus.execute.qiskit-aer`` → ``execute``); None for any other producer (a client)."""
    return next((stage for stage in KEY_STAGES if _produced_by(producer, stage)), None)


def _produced_by(producer: str, stage: str) -> bool:
    """Whether ``producer`` names ``stage``: ``qbus.<stage>``, or with what runs inside it
    (``qbus.execute.qiskit-aer``, the route stage's ``qbus.route-feedback``)."""
    name = producer.removeprefix("qbus.")
    return producer.startswith("qbus.") and (
        name == stage or name.startswith((f"{stage}.", f"{stage}-"))
    )


def _ed25519() -> tuple[type[Ed25519PrivateKey], type[Ed25519PublicKey]]:
    try:
        # Optional (the security extra), and only needed once keys are configured.
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )
    except ImportError as exc:
        raise ConfigError(
            "stage signing keys need the 'cryptography' package: pip install 'qbus[security]'"
        ) from exc
    return Ed25519PrivateKey, Ed25519PublicKey


def _invalid_signature() -> type[Exception]:
    # Only reached with keys loaded, so cryptography is there (see _ed25519).
    from cryptography.exceptions import InvalidSignature

    return InvalidSignature


def public_keys_path(config: Config) -> Path:
    """The trusted public-key file ``config`` names (``<state_dir>/signing/public.json``)."""
    return Path(config.signing.public_keys or Path(config.state_dir) / PUBLIC_KEYS)


def load_trust(config: Config) -> Trust | None:
    """The trusted set ``config`` names; None when signing is off or no file exists yet
    (an unsigned deployment: provenance is then not checked).

    Raises:
        ConfigError: ``[signing] public_keys`` names a file that cannot be read.
    """
    if not config.signing.enabled:
        return None
    path = public_keys_path(config)
    if not config.signing.public_keys and not path.exists():
        return None
    return Trust.load(path)


def generate_keys(state_dir: str | Path, prefix: str = "signing/") -> Path:
    """Write a dev key per stage (file secrets layout: ``<state_dir>/<prefix><stage>``)
    and their public keys (``<state_dir>/signing/public.json``); keys already there are
    kept. Returns the public-key file.

    Raises:
        ConfigError: ``cryptography`` is not installed.
    """
    private_key_class = _ed25519()[0]
    state = Path(state_dir)
    public: dict[str, str] = {}
    for stage in KEY_STAGES:
        path = state / f"{prefix}{stage}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            seed = base64.b64encode(os.urandom(32)).decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(seed + "\n")
        key = private_key_class.from_private_bytes(base64.b64decode(path.read_text().strip()))
        public[stage] = base64.b64encode(_raw_public(key)).decode()
    out = state / PUBLIC_KEYS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(public, indent=2) + "\n")
    return out


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    # Only reached with keys loaded, so cryptography is there (see _ed25519).
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
