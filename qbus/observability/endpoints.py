"""Where the stages' ``/metrics`` endpoints are: port choice and the targets file.

``qbus up`` gives each stage process its own port (the first free one from a base) and
writes the list to ``<state_dir>/prometheus-targets.json`` in Prometheus's
``file_sd_configs`` format, which ``qbus top`` reads and a Prometheus server can watch.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec

TARGETS_FILE = "prometheus-targets.json"


class Target(msgspec.Struct, frozen=True):
    """One scrape target group of Prometheus's file service discovery."""

    targets: list[str]
    labels: dict[str, str] = {}


def port_is_free(port: int, addr: str = "127.0.0.1") -> bool:
    """Whether ``addr:port`` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_ports(base: int, addr: str = "127.0.0.1") -> Iterator[int]:
    """Free ports from ``base`` upwards, skipping used ones.

    ``base`` 0 means "any": a random start in 20000–31999. Not the kernel's ephemeral
    ports (``bind(0)``, 32768 and up here): those are also the local ports of outgoing
    connections, so the stages' own NATS connections could take one between the probe
    here and the stage binding it.

    A port is only probed: another process may still take it before the stage binds it,
    in which case the stage logs the error and runs without its endpoint.
    """
    port = base or random.randrange(20_000, 32_000)
    while port <= 65535:
        if port_is_free(port, addr):
            yield port
        port += 1
    raise RuntimeError(f"no free port from {base} upwards on {addr}")


def write_targets(path: str | Path, endpoints: list[tuple[str, str, int]]) -> Path:
    """Write ``(process, addr, port)`` endpoints as a file_sd targets file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [
        Target(
            targets=[f"{addr}:{port}"],
            labels={"qbus_process": name, "qbus_stage": name.split("#")[0]},
        )
        for name, addr, port in endpoints
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(groups)))
    os.replace(tmp, path)  # Prometheus re-reads the file on change: never a half one
    return path


def read_targets(path: str | Path) -> list[str]:
    """The ``http://host:port/metrics`` URLs in a targets file."""
    groups = msgspec.json.decode(Path(path).read_bytes(), type=list[Target])
    return [f"http://{t}/metrics" for g in groups for t in g.targets]
