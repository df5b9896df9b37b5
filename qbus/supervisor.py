"""Run every stage as its own OS process, restart the ones that die, stop all cleanly.

The servers under ``qbus up`` (nats-server, or each node of a local cluster) are kept
running the same way: one that dies is started again, with backoff, on its own port and
store, while the stages ride through on their reconnects.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger("qbus.supervisor")


class Restartable(Protocol):
    """A server the supervisor keeps running (``qbus.childproc.ChildServer``)."""

    name: str

    def start(self) -> object: ...

    def running(self) -> bool: ...


@dataclass
class ServerProcess:
    """One supervised server, and when it may be started again."""

    server: Restartable
    label: str
    restarts: int = 0
    next_start: float = 0.0
    failures: int = 0


def restart_delay(failures: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before the next start of something that failed ``failures`` times in a
    row: exponential with jitter, so nodes that died together do not all
    come back in the same instant."""
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)


@dataclass
class StageProcess:
    """One supervised stage process.

    Attributes:
        name: Display name (``execute-qiskit-aer#1``).
        argv: Arguments after ``python -m qbus``.
        restarts: Times it was restarted after dying.
    """

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    metrics_port: int | None = None
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "qbus", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
            )
        self.started_at = time.monotonic()


class Supervisor:
    """Starts stage processes and keeps them running.

    Args:
        url: NATS URL every stage connects to.
        log_dir: Each stage's output goes to ``<log_dir>/<name>.log``.
        engines: Engines to start an executor for.
        copies: Processes per stage (they share one durable consumer).
        metrics_base_port: If set, stage i serves /metrics on base + i.
        metrics_ports: Ports to take, one per process in order, instead of base + i (the
            free ports from ``qbus.observability.endpoints.free_ports``).
        extra_stages: More processes, (name, argv after ``python -m qbus``), one each.
        servers: Servers to keep running (nats-server or a cluster's nodes), each
            ``(label, server)``; ``poll_servers`` starts one that died again.
    """

    def __init__(
        self,
        url: str,
        log_dir: str | Path,
        *,
        engines: tuple[str, ...] = ("qiskit-aer",),
        copies: int = 1,
        metrics_base_port: int | None = None,
        extra_env: dict[str, str] | None = None,
        metrics_ports: Iterator[int] | None = None,
        extra_stages: list[tuple[str, list[str]]] | None = None,
        servers: list[tuple[str, Restartable]] | None = None,
    ) -> None:
        self.url = url
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "QBUS_URL": url, **(extra_env or {})}
        self.processes: list[StageProcess] = []
        ports = metrics_ports
        if ports is None and metrics_base_port is not None:
            ports = itertools.count(metrics_base_port)
        plan: list[tuple[str, list[str]]] = []
        for stage in ("ingest", "rewrite", "route"):
            plan += [(stage, ["stage", stage])] * copies
        for engine in engines:
            plan += [(f"execute-{engine}", ["stage", "execute", "--engine", engine])] * copies
        plan += [("verify", ["stage", "verify"])] * copies
        plan.append(("audit", ["stage", "audit"]))  # the chain has one writer
        plan += [("control", ["stage", "control"])] * copies  # reroute / cancel
        plan += extra_stages or []  # e.g. the anchor stage and chain listener (one each)
        counts: dict[str, int] = {}
        for name, argv in plan:
            counts[name] = counts.get(name, 0) + 1
            full = f"{name}#{counts[name]}"
            args = list(argv)
            metrics_port = None
            if ports is not None:
                metrics_port = next(ports)
                args += ["--metrics-port", str(metrics_port)]
            self.processes.append(
                StageProcess(
                    full,
                    args,
                    self.log_dir / f"{full.replace('#', '-')}.log",
                    metrics_port=metrics_port,
                )
            )
        self.servers = [ServerProcess(server, label) for label, server in servers or []]
        self._stopping = False

    def start(self) -> None:
        for p in self.processes:
            p.start(self.env)
            log.info("started %s (pid %s)", p.name, p.proc.pid if p.proc else "?")

    def poll_servers(self) -> list[str]:
        """Start again the servers that died (with backoff and jitter); returns the
        labels of those started."""
        started = []
        for s in self.servers:
            if self._stopping or s.server.running():
                continue
            now = time.monotonic()
            if s.next_start == 0.0:
                s.next_start = now + restart_delay(s.failures + 1, base=0.2)
                log.warning("%s is not running; starting it again", s.label)
            if now < s.next_start:
                continue
            try:
                s.server.start()
            except Exception as exc:  # any start failure: try again later, never give up
                s.failures += 1
                s.next_start = time.monotonic() + restart_delay(s.failures)
                log.warning(
                    "%s did not start (%s); next try in %.1f s",
                    s.label,
                    exc,
                    s.next_start - time.monotonic(),
                )
                continue
            s.failures = 0
            s.next_start = 0.0
            s.restarts += 1
            started.append(s.label)
        return started

    def poll(self) -> list[str]:
        """Restart stages that died (with backoff); returns the names restarted."""
        restarted = []
        now = time.monotonic()
        for p in self.processes:
            if self._stopping or p.proc is None or p.proc.poll() is None:
                continue
            if p.next_start == 0.0:
                # Back off when a stage dies right after starting (e.g. a bad engine).
                quick = now - p.started_at < 5
                p.next_start = now + (min(2 ** min(p.restarts, 5), 30) if quick else 0.2)
                log.warning("%s exited with %s; restarting", p.name, p.proc.returncode)
            if now >= p.next_start:
                p.restarts += 1
                p.next_start = 0.0
                p.start(self.env)
                restarted.append(p.name)
        return restarted

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every stage, wait, SIGKILL the stragglers."""
        self._stopping = True
        for p in self.processes:
            if p.proc and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.processes:
            if p.proc is None:
                continue
            try:
                p.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()

    def alive(self) -> list[str]:
        return [p.name for p in self.processes if p.proc and p.proc.poll() is None]
