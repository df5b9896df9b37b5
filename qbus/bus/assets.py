"""What provisioning may change on an asset that exists, and what it only reports.

An asset (a stream, a KV bucket's or the object store's stream) that exists is the
operator's: provisioning raises its replicas to ``[bus] replicas`` (what a cluster
deployment asks for), and never lowers them or rewrites its other settings. Where those
differ from what qbus would create, a ``Mismatch`` says so; stages log it as a warning at
start and ``qbus doctor`` lists it.
"""

from __future__ import annotations

import dataclasses
import enum

import msgspec
from nats.js import api as js_api

from qbus.bus.config import BusConfig

# Stream settings qbus relies on, compared on an existing stream (replicas apart).
_COMPARED = (
    "subjects",
    "retention",
    "storage",
    "duplicate_window",
    "max_msg_size",
    "max_age",
    "allow_direct",
)


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    """An existing asset whose setting differs from what qbus would create.

    Attributes:
        asset: The stream's name (``QBUS``, ``KV_QBUS_JOBS``, ``OBJ_QBUS_RESULTS``).
        kind: ``stream``, ``KV bucket`` or ``object store``.
        field: The setting (``num_replicas``, ``duplicate_window``, …).
        found: Its value on the server.
        wanted: What qbus's configuration would set.
    """

    asset: str
    kind: str
    field: str
    found: str
    wanted: str

    def describe(self) -> str:
        """One line for a log or ``qbus doctor``."""
        return (
            f"{self.kind} {self.asset}: {self.field} is {self.found} on the server, "
            f"the configuration says {self.wanted} (left as it is)"
        )


def placement(config: BusConfig) -> js_api.Placement | None:
    """Where the assets' replicas go: the configured server tags, else anywhere."""
    if not config.placement_tags:
        return None
    return js_api.Placement(tags=list(config.placement_tags))


def _shown(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _same(a: object, b: object) -> bool:
    # The server answers 60.0 where qbus asked for 60, and enums as enums.
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-6
    return _shown(a) == _shown(b)


def _unset(value: object) -> bool:
    # Settings qbus leaves to the server's default (no age limit, no size limit, the
    # default dedupe window) are not compared: the server fills in its own values.
    return value is None or value == -1 or value == 0


def stream_mismatches(
    found: js_api.StreamConfig, wanted: js_api.StreamConfig, kind: str = "stream"
) -> list[Mismatch]:
    """Settings of the existing stream ``found`` that differ from ``wanted`` (replicas
    and placement apart: ``reconcile_replicas``)."""
    out = []
    for field in _COMPARED:
        want = getattr(wanted, field)
        have = getattr(found, field)
        if _unset(want) or _same(want, have):
            continue
        out.append(
            Mismatch(
                asset=found.name or "?",
                kind=kind,
                field=field,
                found=_shown(have),
                wanted=_shown(want),
            )
        )
    return out


def reconcile_replicas(
    found: js_api.StreamConfig, config: BusConfig, kind: str
) -> tuple[js_api.StreamConfig | None, list[Mismatch]]:
    """The update raising ``found`` to ``config.replicas`` (None: no update), and the
    mismatches left: more replicas than configured (never lowered), other placement tags.
    """
    name = found.name or "?"
    have = found.num_replicas or 1
    update = None
    mismatches = []
    if have < config.replicas:
        update = dataclasses.replace(found, num_replicas=config.replicas)
    elif have > config.replicas:
        mismatches.append(
            Mismatch(
                asset=name,
                kind=kind,
                field="num_replicas",
                found=str(have),
                wanted=f"{config.replicas} ([bus] replicas; never lowered)",
            )
        )
    tags = sorted((found.placement.tags or []) if found.placement else [])
    if config.placement_tags and tags != sorted(config.placement_tags):
        mismatches.append(
            Mismatch(
                asset=name,
                kind=kind,
                field="placement.tags",
                found=_shown(tags),
                wanted=_shown(sorted(config.placement_tags)),
            )
        )
    return update, mismatches
