"""``qbus up`` and ``qbus demo``: run the bus on this machine (``qbus stage``: stage.py)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.server import DEFAULT_CONFIG, NatsCluster, NatsServer
from qbus.bus.signing import generate_keys
from qbus.cli.chain import anchored_report, chain_for_up
from qbus.cli.context import config_of
from qbus.cli.jobs import print_final, submit_and_wait
from qbus.errors import ConfigError
from qbus.gateway.ports import check_port_free
from qbus.observability.endpoints import TARGETS_FILE, free_ports, write_targets
from qbus.schemas.events import (
    JobSubmitted,
    new_event_id,
    new_job_id,
)
from qbus.supervisor import Supervisor
from qbus.verifier.log_audit import verify_log

DEFAULT_MODE_WARNING = (
    "default mode   no NATS auth: for ONE TRUSTED MACHINE only. Anyone who can reach "
    "nats-server can publish, read, delete and purge; stage signatures make a forged "
    "result fail `qbus audit verify` and the client, nothing more. For anything shared "
    "use auth mode: `qbus auth init` (docs/security.md)."
)

BELL_QASM = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


@click.command()
@click.option(
    "--port",
    type=int,
    default=4222,
    show_default=True,
    help="NATS client port (-1: any free port).",
)
@click.option(
    "--store",
    type=click.Path(file_okay=False),
    default=None,
    help="JetStream store directory (default: <state_dir>/nats).",
)
@click.option(
    "--engine",
    "engines",
    multiple=True,
    default=("qiskit-aer",),
    show_default=True,
    help="Engines to start an executor for (repeatable).",
)
@click.option("--copies", type=int, default=1, show_default=True, help="Processes per stage.")
@click.option(
    "--cluster",
    "cluster_size",
    type=click.IntRange(3, 5),
    default=None,
    help="Run a local JetStream cluster of this many nats-server nodes (client ports "
    "--port, --port+1, …; stores <store>/node-<i>) with [bus] replicas 3, instead of one "
    'server (docs/operations.md, "A cluster").',
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="First /metrics port; each stage process takes the next free one "
    "(default: [observability] metrics_port, 9464; 0: any free port).",
)
@click.option("--no-metrics", is_flag=True, help="Serve no /metrics endpoints.")
@click.option(
    "--nats-config",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="nats-server config (default: the shipped nats.conf; auth mode: the "
    "nats-auth.conf `qbus auth init` wrote, see docs/security.md).",
)
@click.option(
    "--chain",
    "chain_opt",
    default=None,
    help="Anchor results on a chain: 'anvil' (starts a local node) or an http(s) JSON-RPC "
    "URL; adds the anchor stage and the chain listener (docs/chain.md).",
)
@click.option(
    "--http",
    "http_port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve the HTTP API and web console on this port (127.0.0.1, or [gateway] "
    "host; docs/gateway.md).",
)
@click.pass_context
def up(
    ctx: click.Context,
    port: int,
    store: str | None,
    engines: tuple[str, ...],
    copies: int,
    metrics_port: int | None,
    no_metrics: bool,
    chain_opt: str | None,
    nats_config: str | None = None,
    cluster_size: int | None = None,
    http_port: int | None = None,
) -> None:
    """Start nats-server and every stage as separate processes; Ctrl-C stops all.

    A nats-server (or cluster node) that dies is started again on its port and store;
    a stage that dies is restarted.
    """

    config = config_of(ctx)
    if http_port is not None:
        # Before anything starts: a taken port is an error now, not a gateway that the
        # supervisor restarts for ever.
        check_port_free(config.gateway.host, http_port)
    state = Path(config.state_dir)
    obs = config.observability
    base = obs.metrics_port if metrics_port is None else metrics_port
    ports = None if no_metrics or base < 0 else free_ports(base, obs.metrics_addr)

    store_dir = Path(store) if store else state / "nats"
    server: NatsServer | NatsCluster
    if cluster_size:
        cluster_ports = None if port < 0 else [port + i for i in range(cluster_size)]
        server = NatsCluster(
            store_dir,
            size=cluster_size,
            ports=cluster_ports,
            config=nats_config or DEFAULT_CONFIG,
        )
        nodes = server.nodes
    else:
        server = NatsServer(store_dir, port=port, config=nats_config or DEFAULT_CONFIG)
        nodes = [server]
    with server, chain_for_up(chain_opt, config, state) as chain_up:
        replicas = 3 if cluster_size else config.bus.replicas
        bus_cfg = msgspec.structs.replace(config.bus, url=server.url, servers=(), replicas=replicas)
        cfg = msgspec.structs.replace(config, bus=bus_cfg)
        asyncio.run(_provision(cfg, engines))
        keys_line = _stage_keys(config)
        extra_stages = list(chain_up.stages)
        if http_port is not None:
            extra_stages.append(("gateway", ["gateway", "--port", str(http_port)]))
        sup = Supervisor(
            server.url,
            state / "logs",
            engines=engines,
            copies=copies,
            metrics_ports=ports,
            # The stages read [bus] from the same settings, with these two overridden.
            extra_env={**chain_up.env, "QBUS_REPLICAS": str(replicas)},
            extra_stages=extra_stages,
            servers=[(f"nats-server {n.server_name or ''}".rstrip(), n) for n in nodes],
        )
        sup.start()
        for n in nodes:
            named = f"  {n.server_name}" if n.server_name else ""
            click.echo(f"nats-server  {n.url}{named}  (store {n.store_dir}, pid {n.pid})")
        if cluster_size:
            click.echo(
                f"cluster      {cluster_size} nodes, replicas {replicas}: "
                f"QBUS_URL={server.url} QBUS_REPLICAS={replicas}"
            )
        click.echo(keys_line)
        if nats_config is None:
            click.echo(DEFAULT_MODE_WARNING)
        if chain_up.summary:
            click.echo(chain_up.summary)
        if http_port is not None:
            site = f"http://{config.gateway.host}:{http_port}"
            click.echo(f"gateway      {site}/v1/  console {site}/console/")
        for p in sup.processes:
            metrics = (
                f"  metrics http://{obs.metrics_addr}:{p.metrics_port}/metrics"
                if p.metrics_port is not None
                else ""
            )
            click.echo(f"stage {p.name:<24} pid {p.proc.pid if p.proc else '?'}{metrics}")
        endpoints = [
            (p.name, obs.metrics_addr, p.metrics_port)
            for p in sup.processes
            if p.metrics_port is not None
        ]
        if endpoints:
            targets = write_targets(state / TARGETS_FILE, endpoints)
            click.echo(f"metrics targets (Prometheus file_sd, read by `qbus top`): {targets}")
        try:
            # A service manager stops us with SIGTERM: stop the stages and nats-server as
            # Ctrl-C does, rather than dying and leaving them running. Installed before
            # the ready line below (what a supervisor or a test waits for), and inside
            # this try, so a signal at any point from here on stops the stages.
            signal.signal(signal.SIGTERM, _interrupt)
            click.echo(f"logs in {sup.log_dir}/ — Ctrl-C stops everything")
            while True:
                for label in sup.poll_servers():
                    click.echo(f"restarted {label}", err=True)
                for name in sup.poll():
                    click.echo(f"restarted {name}", err=True)
                time.sleep(0.5)
        except KeyboardInterrupt:
            click.echo("\nstopping…")
        finally:
            sup.stop()


def _stage_keys(config: Config) -> str:
    """Make the stages' dev signing keys (unless a trusted set is configured); a line
    saying where they are, or why events go unsigned."""
    signing = config.signing
    if not signing.enabled:
        return "stage keys   off ([signing] enabled = false): events are not signed"
    if signing.public_keys:
        return f"stage keys   from the secrets provider; trusted set {signing.public_keys}"
    try:
        public = generate_keys(config.state_dir, signing.key_prefix)
    except ConfigError as exc:
        return f"stage keys   none, events are not signed: {exc}"
    return f"stage keys   {public} (Ed25519 per stage: final events are signed)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _provision(config: Config, engines: tuple[str, ...] = ()) -> None:
    async with await Bus.connect(config.bus, retry_for=60.0) as bus:
        await bus.provision(
            cache_ttl=config.cache.ttl_seconds, chunks_ttl=config.chunks.ttl_seconds
        )
        for engine in engines:
            await bus.ensure_executor(engine)


@click.command()
@click.option("--shots", type=int, default=1000, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the demo's store directory.")
@click.option(
    "--chain",
    "chain_opt",
    default=None,
    help="Also anchor the result on a chain: 'anvil' (a local node) or an http(s) URL.",
)
@click.pass_context
def demo(ctx: click.Context, shots: int, keep: bool, chain_opt: str | None) -> None:
    """Start a local bus, run a Bell-state job to a verified result, stop everything."""

    config = config_of(ctx)
    workdir = Path(tempfile.mkdtemp(prefix="qbus-demo-"))
    click.echo(f"starting nats-server (JetStream, store {workdir / 'nats'})")

    try:
        with (
            NatsServer(workdir / "nats") as server,
            chain_for_up(chain_opt, config, workdir) as chain_up,
        ):
            cfg = msgspec.structs.replace(
                config, bus=msgspec.structs.replace(config.bus, url=server.url)
            )
            asyncio.run(_provision(cfg, ("qiskit-aer",)))
            sup = Supervisor(
                server.url,
                workdir / "logs",
                extra_env=chain_up.env,
                extra_stages=chain_up.stages,
            )
            sup.start()
            if chain_up.summary:
                click.echo(chain_up.summary)
            click.echo(
                f"started {len(sup.processes)} stage processes: "
                + ", ".join(p.name for p in sup.processes)
            )
            try:
                job = JobSubmitted(
                    event_id=new_event_id(),
                    job_id=new_job_id(),
                    producer="qbus.demo",
                    source=BELL_QASM,
                    shots=shots,
                )
                click.echo(f"submitting a Bell-state job ({shots} shots): {job.job_id}")
                final = asyncio.run(submit_and_wait(cfg, job, 120.0, echo_progress=True))
                code = print_final(final)
                if code == 0:
                    report = asyncio.run(_audit_when_chained(cfg))
                    if report.ok:
                        click.echo(f"audit: OK — {report.checked} events match the hash chain")
                    else:
                        click.echo(f"audit: FAILED — {report.problem}", err=True)
                        code = 1
                if code == 0 and chain_up.stages:
                    chain_cfg = msgspec.structs.replace(
                        cfg.chain, rpc_url=chain_up.env["QBUS_CHAIN_RPC_URL"]
                    )
                    ok, lines = asyncio.run(
                        anchored_report(msgspec.structs.replace(cfg, chain=chain_cfg), job.job_id)
                    )
                    click.echo(lines, err=not ok)
                    code = 0 if ok else 1
            finally:
                sup.stop()
            sys.exit(code)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def _audit_when_chained(config: Config, timeout: float = 15.0):
    """Verify the log once the auditor has chained every event (it runs a moment behind)."""
    async with await Bus.connect(config.bus) as bus:
        deadline = time.monotonic() + timeout
        while True:
            report = await verify_log(bus)
            if not report.ok or report.unaudited == 0 or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.2)
