"""What ``qbus doctor --bus`` says about the bus: the nodes, each asset's leader,
replicas and lag, and where the assets differ from the configuration.

Read-only: it asks the server for stream and consumer info and changes nothing.
"""

from __future__ import annotations

import msgspec
from nats.js.errors import NotFoundError

from qbus.bus.assets import Mismatch, reconcile_replicas
from qbus.bus.connection import Bus


class Peer(msgspec.Struct, frozen=True, kw_only=True):
    """One replica of an asset.

    Attributes:
        node: Server name.
        leader: Whether it leads the asset's raft group (takes the writes).
        current: Whether it has caught up with the leader.
        offline: Whether the leader cannot reach it.
        lag: Operations it is behind the leader (0 for the leader).
    """

    node: str
    leader: bool
    current: bool
    offline: bool
    lag: int


class AssetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One stream (the event log, a KV bucket's, the object store's).

    Attributes:
        name: The stream's name.
        kind: ``stream``, ``KV bucket`` or ``object store``.
        replicas: Its replica count on the server.
        leader: The node leading it ("" on a single server without a cluster).
        peers: Every replica, the leader first.
        messages: Messages it holds.
        consumer_lag: For the event log, each durable consumer's messages not yet
            acknowledged (pending + in flight).
    """

    name: str
    kind: str
    replicas: int
    leader: str
    peers: list[Peer]
    messages: int
    consumer_lag: dict[str, int] = {}


class BusReport(msgspec.Struct, frozen=True, kw_only=True):
    """The bus as ``qbus doctor --bus`` prints it.

    Attributes:
        connected_to: The server this client is connected to.
        cluster: The cluster's name ("" for a single server).
        nodes: Every node any asset is placed on, with ``offline`` when a leader
            cannot reach it.
        assets: Every qbus asset, present or not.
        missing: Assets not provisioned yet.
        mismatches: Settings that differ from the configuration (never changed by
            provisioning: docs/operations.md).
    """

    connected_to: str
    cluster: str
    nodes: dict[str, str]
    assets: list[AssetStatus]
    missing: list[str]
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        """No asset missing, none with a replica offline, no mismatch."""
        offline = any(p.offline for a in self.assets for p in a.peers)
        return not self.missing and not offline and not self.mismatches


def asset_names(bus: Bus) -> list[tuple[str, str]]:
    """(stream name, kind) of every asset provisioning makes."""
    cfg = bus.config
    return [
        (cfg.stream, "stream"),
        (cfg.audit_stream, "stream"),
        (cfg.tenant_stream, "stream"),
        (cfg.advisory_stream, "stream"),
        *(
            (f"KV_{b}", "KV bucket")
            for b in (cfg.kv_jobs, cfg.kv_chain, cfg.kv_cache, cfg.kv_chunks)
        ),
        (f"OBJ_{cfg.object_store}", "object store"),
    ]


async def bus_report(bus: Bus) -> BusReport:
    """Ask the server about every qbus asset (read-only)."""
    assets: list[AssetStatus] = []
    missing: list[str] = []
    mismatches: list[Mismatch] = []
    nodes: dict[str, str] = {}
    cluster_name = ""
    for name, kind in asset_names(bus):
        try:
            info = await bus.js.stream_info(name)
        except NotFoundError:
            missing.append(name)
            continue
        mismatches += reconcile_replicas(info.config, bus.config, kind)[1]
        peers = []
        leader = ""
        if info.cluster is not None:
            cluster_name = info.cluster.name or cluster_name
            leader = info.cluster.leader or ""
            if leader:
                peers.append(Peer(node=leader, leader=True, current=True, offline=False, lag=0))
                nodes.setdefault(leader, "up")
            for r in info.cluster.replicas or []:
                peer = Peer(
                    node=r.name or "?",
                    leader=False,
                    current=bool(r.current),
                    offline=bool(r.offline),
                    lag=r.lag or 0,
                )
                peers.append(peer)
                if peer.offline:
                    nodes[peer.node] = "offline"
                else:
                    nodes.setdefault(peer.node, "up")
        lag: dict[str, int] = {}
        if name == bus.config.stream:
            for c in await bus.js.consumers_info(name):
                if c.config.durable_name:  # the stages' consumers, not a client's watch
                    lag[c.name or "?"] = (c.num_pending or 0) + (c.num_ack_pending or 0)
        assets.append(
            AssetStatus(
                name=name,
                kind=kind,
                replicas=info.config.num_replicas or 1,
                leader=leader,
                peers=peers,
                messages=info.state.messages,
                consumer_lag=lag,
            )
        )
    url = bus.nc.connected_url
    return BusReport(
        connected_to=url.geturl() if url else "?",
        cluster=cluster_name,
        nodes=dict(sorted(nodes.items())),
        assets=assets,
        missing=missing,
        mismatches=mismatches,
    )


def format_report(report: BusReport) -> list[str]:
    """The report as lines for a terminal."""
    lines = [
        f"bus      connected to {report.connected_to}"
        + (f", cluster {report.cluster}" if report.cluster else ", single server")
    ]
    if report.nodes:
        lines.append(
            "nodes    " + ", ".join(f"{node} ({state})" for node, state in report.nodes.items())
        )
    for a in report.assets:
        followers = ", ".join(
            f"{p.node} {'offline' if p.offline else 'current' if p.current else 'catching up'}"
            f" lag {p.lag}"
            for p in a.peers
            if not p.leader
        )
        where = f" leader {a.leader}" if a.leader else ""
        lines.append(
            f"{a.kind:<12} {a.name:<24} R{a.replicas}{where}"
            + (f"  followers: {followers}" if followers else "")
            + f"  {a.messages} msgs"
        )
        for consumer, lag in sorted(a.consumer_lag.items()):
            lines.append(f"  consumer {consumer:<32} lag {lag}")
    for name in report.missing:
        lines.append(f"missing      {name} (not provisioned: start a stage or `qbus up`)")
    for m in report.mismatches:
        lines.append(f"MISMATCH     {m.describe()}")
    return lines
