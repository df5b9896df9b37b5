"""The ``qbus`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import msgspec

from qbus.bus.config import Config, load_config
from qbus.bus.connection import Bus
from qbus.bus.subjects import STAGE_NAMES
from qbus.cli_exit import EXIT_CODES, QbusGroup, TimedOut
from qbus.errors import QasmSyntaxError, QbusError
from qbus.schemas.events import (
    Event,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
    decode,
    json_schemas,
    new_event_id,
    new_job_id,
)
from qbus.schemas.sweep import SweepPoint

BELL_QASM = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


def _config(ctx: click.Context) -> Config:
    return ctx.obj["config"]


@click.group(cls=QbusGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $QBUS_CONFIG).",
)
@click.option("--url", default=None, help="NATS URL (default: $QBUS_URL or nats://127.0.0.1:4222).")
@click.option("-v", "--verbose", count=True, help="More logging.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, url: str | None, verbose: int) -> None:
    """qbus: publish quantum jobs on NATS JetStream and get verified results."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    config = load_config(config_path)  # a ConfigError ends with exit code 2
    if url:
        config = msgspec.structs.replace(config, bus=msgspec.structs.replace(config.bus, url=url))
    if config_path:
        # Stage processes started from here (`qbus up`) read the same file: in auth mode
        # it names their users and where their passwords are.
        os.environ["QBUS_CONFIG"] = str(Path(config_path).resolve())
    # Commands that work offline (`qbus engines`) ask the bus only when told where it is.
    ctx.obj = {"config": config, "url_given": bool(url or os.environ.get("QBUS_URL"))}


def main() -> None:
    """Entry point of the ``qbus`` script (exit codes: qbus/cli_exit.py)."""
    cli(prog_name="qbus")  # also under `python -m qbus`


# -- stages and the local bus -----------------------------------------------------------


@cli.command()
@click.argument("name", type=click.Choice(STAGE_NAMES))
@click.option(
    "--engine",
    default="qiskit-aer",
    show_default=True,
    help="For 'execute': the engine this executor runs.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics on this port.",
)
@click.pass_context
def stage(ctx: click.Context, name: str, engine: str, metrics_port: int | None) -> None:
    """Run one stage (ingest, rewrite, route, execute, verify, audit, anchor, control) here."""
    from qbus.consumers.stages import run_stage
    from qbus.observability import tracing

    config = _config(ctx)
    if name == "execute":
        # The jax engine's compiled programs persist across its per-job worker children
        # (qbus/engines/jax_engine.py, CACHE_DIR_ENV; named here so the CLI never
        # imports jax).
        cache = Path(config.state_dir, "jax-cache").resolve()
        os.environ.setdefault("QBUS_JAX_CACHE_DIR", str(cache))
    # Spans go where the OTEL_* variables say (none by default): docs/observability.md.
    tracing.setup(f"qbus-{name}")
    logging.getLogger().setLevel(logging.INFO)
    if metrics_port is not None:
        from qbus.observability.metrics import serve

        try:
            serve(metrics_port, config.observability.metrics_addr)
        except OSError as exc:
            # The jobs matter more than their figures: run on, say so loudly.
            logging.getLogger("qbus.metrics").error(
                "cannot serve /metrics on port %s: %s; running without it", metrics_port, exc
            )
    _run_fast(run_stage(name, config, engine=engine))


def _run_fast(coro) -> None:
    """Run a stage on uvloop where it is installed: about a third less latency per hop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


@cli.command()
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
) -> None:
    """Start nats-server and every stage as separate processes; Ctrl-C stops all."""
    from qbus.bus.server import DEFAULT_CONFIG, NatsServer
    from qbus.observability.endpoints import TARGETS_FILE, free_ports, write_targets
    from qbus.supervisor import Supervisor

    config = _config(ctx)
    state = Path(config.state_dir)
    obs = config.observability
    base = obs.metrics_port if metrics_port is None else metrics_port
    ports = None if no_metrics or base < 0 else free_ports(base, obs.metrics_addr)
    from qbus.chain_cli import chain_for_up

    with (
        NatsServer(
            store or state / "nats", port=port, config=nats_config or DEFAULT_CONFIG
        ) as server,
        chain_for_up(chain_opt, config, state) as chain_up,
    ):
        cfg = msgspec.structs.replace(
            config, bus=msgspec.structs.replace(config.bus, url=server.url)
        )
        asyncio.run(_provision(cfg, engines))
        sup = Supervisor(
            server.url,
            state / "logs",
            engines=engines,
            copies=copies,
            metrics_ports=ports,
            extra_env=chain_up.env,
            extra_stages=chain_up.stages,
        )
        sup.start()
        click.echo(f"nats-server  {server.url}  (store {server.store_dir}, pid {server.pid})")
        if chain_up.summary:
            click.echo(chain_up.summary)
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
        # A service manager stops us with SIGTERM: stop the stages and nats-server as
        # Ctrl-C does, rather than dying and leaving them running. Installed before the
        # ready line below, which is what a supervisor or a test waits for.
        signal.signal(signal.SIGTERM, _interrupt)
        click.echo(f"logs in {sup.log_dir}/ — Ctrl-C stops everything")
        try:
            while server.running():
                for name in sup.poll():
                    click.echo(f"restarted {name}", err=True)
                time.sleep(0.5)
            click.echo("nats-server exited; stopping stages", err=True)
        except KeyboardInterrupt:
            click.echo("\nstopping…")
        finally:
            sup.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _provision(config: Config, engines: tuple[str, ...] = ()) -> None:
    async with await Bus.connect(config.bus) as bus:
        await bus.provision(
            cache_ttl=config.cache.ttl_seconds, chunks_ttl=config.chunks.ttl_seconds
        )
        for engine in engines:
            await bus.ensure_executor(engine)


@cli.command()
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
    from qbus.bus.server import NatsServer
    from qbus.supervisor import Supervisor

    config = _config(ctx)
    workdir = Path(tempfile.mkdtemp(prefix="qbus-demo-"))
    click.echo(f"starting nats-server (JetStream, store {workdir / 'nats'})")
    from qbus.chain_cli import anchored_report, chain_for_up

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
                final = asyncio.run(_submit_and_wait(cfg, job, 120.0, echo_progress=True))
                code = _print_final(final)
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
    from qbus.consumers.audit import verify_log

    async with await Bus.connect(config.bus) as bus:
        deadline = time.monotonic() + timeout
        while True:
            report = await verify_log(bus)
            if not report.ok or report.unaudited == 0 or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.2)


async def _submit_and_wait(
    config: Config, job: JobSubmitted, timeout: float, echo_progress: bool = False
) -> Event:
    from qbus.producers.submit import events_of, submit, wait_final

    async with await Bus.connect(config.bus) as bus:
        await submit(bus, job)
        click.echo(f"submitted {job.job_id}", err=True)
        if not echo_progress:
            return await wait_final(bus, job.job_id, timeout)
        started = time.monotonic()
        final: Event | None = None
        async for seq, subject, event in events_of(bus, job.job_id, follow=True):
            click.echo(
                f"  {time.monotonic() - started:6.3f}s  #{seq:<5} {subject:<40} "
                f"{event.__struct_config__.tag}"
            )
            final = event
        assert final is not None
        return final


def _print_final(event: Event) -> int:
    match event:
        case JobCompleted():
            v = event.verification
            click.echo(f"job {event.job_id}: completed on {event.engine} {event.engine_version}")
            if event.counts is not None:
                click.echo(_counts_table(event.counts, event.shots))
            if event.statevector is not None:
                click.echo(f"state vector: {len(event.statevector) // 2} amplitudes")
            if event.statevector_ref:
                click.echo(f"state vector stored at {event.statevector_ref}")
            if event.expectations is not None:
                # In the order the job gave its observables.
                for k, value in enumerate(event.expectations):
                    click.echo(f"observable {k}: {value:.10g}")
            if event.sweep_results is not None:
                click.echo(_sweep_table(event.sweep_results))
            if event.noise is not None or event.dynamics is not None:
                from qbus.producers.open_options import dynamics_table, noise_line

                if event.noise is not None:
                    click.echo(f"noise: {noise_line(event.noise)}")
                if event.dynamics is not None:
                    click.echo(dynamics_table(event.dynamics))
            click.echo(f"verification: {v.verdict.upper()} ({v.test}) {v.detail}")
            click.echo(f"result hash: {event.result_hash}")
            return 0
        case JobRejected():
            where = f" at {event.where}" if event.where else ""
            click.echo(
                f"job {event.job_id}: REJECTED [{event.code}]{where}: {event.message}", err=True
            )
            return 1
        case JobFailed():
            click.echo(
                f"job {event.job_id}: FAILED [{event.code}] in {event.stage}: {event.message}",
                err=True,
            )
            return 1
    click.echo(f"unexpected final event {event!r}", err=True)
    return 1


def _sweep_table(points: list[SweepPoint], rows: int = 16) -> str:
    lines = [f"sweep: {len(points)} points"]
    for i, point in enumerate(points[:rows]):
        if point.expectations is not None:
            values = ", ".join(f"{x:.6g}" for x in point.expectations)
            lines.append(f"  point {i}: <O> = [{values}]")
        else:
            top = sorted((point.counts or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:4]
            lines.append(f"  point {i}: " + ", ".join(f"{k}: {n}" for k, n in top))
    if len(points) > rows:
        lines.append(f"  … {len(points) - rows} more points")
    return "\n".join(lines)


def _counts_table(counts: dict[str, int], shots: int, width: int = 40) -> str:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values()) or 1
    key_w = max(6, *(len(k) for k in counts)) if counts else 6
    lines = [f"{'outcome':<{key_w}}  {'count':>8}  {'prob':>7}"]
    for key, n in rows[:32]:
        bar = "█" * max(1, round(width * n / total))
        lines.append(f"{key:<{key_w}}  {n:>8}  {n / total:>7.4f}  {bar}")
    if len(rows) > 32:
        lines.append(f"… {len(rows) - 32} more outcomes")
    return "\n".join(lines)


# -- jobs -------------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--shots", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option(
    "--method",
    default="sample",
    show_default=True,
    type=click.Choice(["sample", "statevector", "expectation", "sweep", "dynamics"]),
    help="sample: counts; statevector: the final state; expectation: exact values of the "
    "--observable(s); sweep: one result per --sweep point; dynamics: Lindblad evolution of "
    "the circuit's state (--dynamics).",
)
@click.option(
    "--observable",
    "observable_texts",
    multiple=True,
    metavar="PAULI-SUM",
    help="An observable, e.g. 'Z0 Z1 + 0.5 X2' (repeatable); implies --method expectation "
    "unless the job is a sweep, whose points then report these values.",
)
@click.option(
    "--observables",
    "observables_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='JSON file: a list of {"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}], "name": ...}.',
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Points per chunk of a long sweep (docs/long-jobs.md); the server's default otherwise.",
)
@click.option(
    "--sweep",
    "sweep_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='JSON file with a list of parameter sets, e.g. [{"theta": 0.1}, {"theta": 0.2}]; '
    "implies --method sweep.",
)
@click.option("--engine", default="auto", show_default=True)
@click.option("--no-optimize", is_flag=True, help="Skip the rewrite passes.")
@click.option(
    "--hypervisor",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "inline", "process", "bwrap"]),
    help="Sandbox for the engine code (docs/hypervisor.md).",
)
@click.option(
    "--memory-mb", type=click.IntRange(min=1), default=None, help="Memory limit of the run (MiB)."
)
@click.option(
    "--cpu-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="CPU-time limit of the run.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Value of a named circuit parameter (repeatable).",
)
@click.option(
    "--noise-depolarizing",
    type=float,
    default=None,
    metavar="P",
    help="Depolarising probability after every gate (docs/engines.md, Noise).",
)
@click.option(
    "--noise-damping", type=float, default=None, metavar="G", help="Amplitude damping after gates."
)
@click.option(
    "--readout-error",
    "readout_errors",
    multiple=True,
    metavar="Q:P01:P10",
    help="Readout error of qubit Q: P(read 1|0) and P(read 0|1) (repeatable).",
)
@click.option(
    "--dynamics",
    "dynamics_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON dynamics spec (docs/engines.md, Dynamics); implies --method dynamics.",
)
@click.option("--job-id", default=None)
@click.option("--wait/--no-wait", default=False, help="Wait for and print the result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds --wait waits for the final event (exit code 4 after that).",
)
@click.option(
    "--ai-optimize", is_flag=True, help="Ask the AI assistant for a checked rewrite (docs/ai.md)."
)
@click.option(
    "--priority",
    default="normal",
    show_default=True,
    type=click.Choice(["high", "normal", "low"]),
    help="Executors fetch high before normal before low (docs/routing.md).",
)
@click.option(
    "--no-cache", is_flag=True, help="Run even when the result cache holds this job's result."
)
@click.pass_context
def submit(
    ctx: click.Context,
    file: str,
    shots: int,
    seed: int | None,
    method: str,
    engine: str,
    no_optimize: bool,
    hypervisor: str,
    memory_mb: int | None,
    cpu_seconds: float | None,
    params: tuple[str, ...],
    job_id: str | None,
    wait: bool,
    timeout: float,
    sweep_file: str | None = None,
    noise_depolarizing: float | None = None,
    noise_damping: float | None = None,
    readout_errors: tuple[str, ...] = (),
    dynamics_file: str | None = None,
    ai_optimize: bool = False,
    priority: str = "normal",
    no_cache: bool = False,
    observable_texts: tuple[str, ...] = (),
    observables_file: str | None = None,
    chunk_size: int | None = None,
) -> None:
    """Submit the circuit in FILE (OpenQASM 2/3, Quil or JSON IR).

    The program is parsed here first: a syntax error is reported with its line and
    column (exit code 1) before anything connects.
    """
    from qbus.producers.submit import job_from_file
    from qbus.producers.submit import submit as submit_job

    parameters = {}
    for item in params:
        name, _, value = item.partition("=")
        try:
            parameters[name] = float(value)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: expected NAME=NUMBER") from exc
    sweep: list[dict[str, float]] = []
    if sweep_file is not None:
        try:
            sweep = msgspec.json.decode(Path(sweep_file).read_bytes(), type=list[dict[str, float]])
        except msgspec.DecodeError as exc:
            raise click.BadParameter(
                f"{sweep_file}: expected a JSON list of {{name: number}} objects ({exc})",
                param_hint="--sweep",
            ) from exc
        method = "sweep"
    from qbus.producers.open_options import (
        dynamics_from_file,
        noise_from_options,
        observable_from_text,
        observables_from_file,
    )

    try:
        observables = [observable_from_text(text) for text in observable_texts]
        if observables_file is not None:
            observables += observables_from_file(observables_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--observable/--observables") from exc
    if observables and method == "sample":
        method = "expectation"

    try:
        noise = noise_from_options(noise_depolarizing, noise_damping, readout_errors)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="noise options") from exc
    dynamics = None
    if dynamics_file is not None:
        try:
            dynamics = dynamics_from_file(dynamics_file)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--dynamics") from exc
        method = "dynamics"
    job = job_from_file(
        file,
        shots=shots,
        seed=seed,
        method=method,
        engine=engine,
        optimize=not no_optimize,
        parameters=parameters,
        job_id=job_id,
        hypervisor=hypervisor,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        sweep=sweep,
        noise=noise,
        dynamics=dynamics,
        ai_optimize=ai_optimize,
        priority=priority,
        cache=not no_cache,
        observables=observables,
        chunk_size=chunk_size,
    )
    config = _config(ctx)
    _check_program_locally(file, job, config)
    from qbus.observability import tracing

    tracing.setup("qbus-cli")  # the submission is the trace's root span when tracing is on
    if not wait:

        async def go() -> int:
            async with await Bus.connect(config.bus) as bus:
                return await submit_job(bus, job)

        seq = asyncio.run(go())
        click.echo(f"{job.job_id}  (event log #{seq})")
        return
    try:
        final = asyncio.run(_submit_and_wait(config, job, timeout))
    except TimeoutError as exc:
        raise TimedOut(f"{exc}; the job may still finish: qbus status {job.job_id}") from exc
    sys.exit(_print_final(final))


def _check_program_locally(file: str, job: JobSubmitted, config: Config) -> None:
    """Parse the job's program as ingest will, and stop with its error if it does not parse.

    The bus would reject the job with the same code and position; saying so here works
    without a server and costs the user no round trip.
    """
    from qbus.frontends.program import parse_program

    if job.source is None:
        return
    limits = config.limits
    try:
        parse_program(
            job.source, job.format, max_bytes=limits.max_source_bytes, max_ops=limits.max_ops
        )
    except QasmSyntaxError as exc:
        click.echo(f"error: {file}:{exc.line}:{exc.column}: {exc.message} [{exc.code}]", err=True)
        sys.exit(EXIT_CODES["failed"])
    except QbusError as exc:
        where = f" (at {exc.where})" if exc.where else ""
        click.echo(f"error: {file}{where}: {exc.message} [{exc.code}]", err=True)
        sys.exit(EXIT_CODES["failed"])


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print each event as JSON.")
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job's state and its events in order."""
    from qbus.producers.submit import events_of

    config = _config(ctx)

    async def go() -> int:
        async with await Bus.connect(config.bus) as bus:
            state = await bus.job_state(job_id)
            if state is None:
                click.echo(f"job {job_id}: not known to this bus", err=True)
                return 1
            click.echo(
                f"job {job_id}: {state.status} (stage {state.stage}"
                + (f", engine {state.engine}" if state.engine else "")
                + ")"
            )
            from qbus.control_cli import job_progress

            if (progress := await job_progress(bus, job_id)) is not None:
                click.echo(f"  {progress}")  # a long job's chunks (docs/long-jobs.md)
            async for seq, subject, event in events_of(bus, job_id, timeout=1.0):
                if as_json:
                    click.echo(msgspec.json.encode(event).decode())
                else:
                    click.echo(
                        f"#{seq:<6} {subject:<44} {event.__struct_config__.tag}  {_summary(event)}"
                    )
            return 0

    sys.exit(asyncio.run(go()))


def _summary(event: Event) -> str:
    match event:
        case JobCompleted():
            return f"verdict={event.verification.verdict} hash={event.result_hash[:19]}…"
        case JobFailed() | JobRejected():
            return f"[{event.code}] {event.message}"
    return ""


@cli.command()
@click.option("--job", "job_filter", default="*", help="Only this job id.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def watch(ctx: click.Context, job_filter: str, as_json: bool) -> None:
    """Print final results as they arrive (Ctrl-C to stop).

    With ``--job`` a long job's chunk progress is shown as a bar as it changes.
    """
    config = _config(ctx)

    async def go() -> None:
        async with await Bus.connect(config.bus) as bus:
            background: list[asyncio.Task] = []
            if job_filter != "*" and not as_json:
                from qbus.control_cli import follow_progress

                background.append(asyncio.create_task(follow_progress(bus, job_filter)))
            sub = await bus.nc.subscribe(bus.subjects.result(job_filter))
            async for msg in sub.messages:
                event = decode(msg.data)
                if as_json:
                    click.echo(msg.data.decode())
                    continue
                tag = event.__struct_config__.tag
                click.echo(f"{time.strftime('%H:%M:%S')} {event.job_id} {tag} {_summary(event)}")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


# -- tools ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write one <tag>.json per event and asyncapi.json here instead of printing.",
)
@click.option("--asyncapi", is_flag=True, help="Print the AsyncAPI 3.0 document instead.")
def schema(out: str | None, asyncapi: bool) -> None:
    """Export the JSON Schema of every event and the AsyncAPI document of the bus."""
    from qbus.schemas.asyncapi import asyncapi_document, write_schema_files

    if out is not None:
        paths = write_schema_files(out)
        click.echo(f"wrote {len(paths)} files to {out}")
    elif asyncapi:
        click.echo(json.dumps(asyncapi_document(), indent=2))
    else:
        click.echo(json.dumps(json_schemas(), indent=2, sort_keys=True))


@cli.command()
@click.option(
    "--check",
    is_flag=True,
    help="Load every engine (imports its framework, seconds each) and show its methods and "
    "widths, or why it does not load.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_context
def engines(ctx: click.Context, check: bool, as_json: bool) -> None:
    """List the installed engines and their versions (from package metadata).

    With --url (or QBUS_URL) it also says which engines have executors on that bus.
    """
    from qbus.engines.catalog import engine_listing

    deployed: set[str] | None = None
    if ctx.obj["url_given"]:
        deployed = asyncio.run(_deployed_engines(_config(ctx)))
    if check:
        # Loading engines imports numpy and the frameworks: only when asked.
        from qbus.engines.registry import engine_table

        rows = engine_table()
    else:
        rows = [msgspec.structs.asdict(r) for r in engine_listing()]
        for row in rows:
            row["available"] = row["installed"]
            row["error"] = "" if row["installed"] else f"not installed: {row['hint']}"
    if deployed is not None:
        for row in rows:
            row["deployed"] = row["name"] in deployed
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    version_w = max([len("version"), *(len(str(r["version"])) for r in rows)])
    header = f"{'name':<12} {'version':<{version_w}} {'available':<10}"
    if deployed is not None:
        header += f" {'deployed':<9}"
    methods_w = 0
    if check:
        methods_w = max([len("methods"), *(len(",".join(r["methods"])) for r in rows)])
        header += f" {'methods':<{methods_w}} max qubits"
    click.echo(header.rstrip())
    for row in rows:
        line = f"{row['name']:<12} {row['version']:<{version_w}} {row['available']!s:<10}"
        if deployed is not None:
            line += f" {row['deployed']!s:<9}"
        if check:
            widths = row["max_qubits"] or {}
            limit = ", ".join(f"{m} {n}" for m, n in widths.items()) if widths else "-"
            line += f" {','.join(row['methods']):<{methods_w}} {limit}"
        click.echo(line.rstrip())
        if not row["available"] and row["error"]:
            click.echo(f"{'':<12} {row['error']}")
    if deployed is not None:
        unknown = sorted(deployed - {r["name"] for r in rows})
        if unknown:
            click.echo(f"deployed on the bus but not installed here: {', '.join(unknown)}")


async def _deployed_engines(config: Config) -> set[str]:
    async with await Bus.connect(config.bus) as bus:
        return await bus.deployed_engines()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Report which sandbox drivers work on this machine, and why one does not.

    Runs a real job under each driver (and a trivial bubblewrap start first); exits 1
    when a driver does not work.
    """
    from qbus.hypervisor.doctor import check_drivers

    checks = check_drivers()
    if as_json:
        click.echo(json.dumps([msgspec.structs.asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(f"{c.driver:<8} {'ok' if c.works else 'FAILS':<6} {c.detail}")
    if not all(c.works for c in checks):
        sys.exit(1)


# Commands that live with their area register here, one line each (lazy imports inside
# the command bodies keep `qbus --help` fast).
cli.add_command(__import__("qbus.ai.cli", fromlist=["ai"]).ai)
cli.add_command(__import__("qbus.top_cli", fromlist=["top"]).top)
cli.add_command(__import__("qbus.chain_cli", fromlist=["chain"]).chain)
cli.add_command(__import__("qbus.auth_cli", fromlist=["auth"]).auth)
cli.add_command(__import__("qbus.auth_cli", fromlist=["secrets"]).secrets)
cli.add_command(__import__("qbus.audit_cli", fromlist=["audit"]).audit)
cli.add_command(__import__("qbus.producers.template_cli", fromlist=["run"]).run)
cli.add_command(__import__("qbus.dlq_cli", fromlist=["dlq"]).dlq)
cli.add_command(__import__("qbus.control_cli", fromlist=["reroute"]).reroute)
cli.add_command(__import__("qbus.control_cli", fromlist=["cancel"]).cancel)
