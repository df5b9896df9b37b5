"""``qbus submit``, ``qbus status`` and ``qbus watch``: jobs on a running bus."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import click
import msgspec
from nats.aio.msg import Msg

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of, logged_events, stored_events
from qbus.bus.signing import Trust, load_trust
from qbus.cli.context import config_of
from qbus.cli.control import follow_progress, job_progress
from qbus.cli.exit import EXIT_CODES, TimedOut
from qbus.errors import QasmSyntaxError, QbusError
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.frontends.program import parse_program
from qbus.observability import tracing
from qbus.producers.open_options import (
    dynamics_from_file,
    dynamics_table,
    noise_from_options,
    noise_line,
    observable_from_text,
    observables_from_file,
)
from qbus.producers.submit import job_from_file, wait_answer
from qbus.producers.submit import submit as submit_job
from qbus.schemas.enums import HYPERVISORS, METHODS, PRIORITIES
from qbus.schemas.events import (
    Event,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
)
from qbus.schemas.sweep import SweepPoint


async def submit_and_wait(
    config: Config, job: JobSubmitted, timeout: float, echo_progress: bool = False
) -> Event:

    async with await Bus.connect(config.bus) as bus:
        bus.trust = load_trust(config)  # a final event counts only when a stage signed it
        sequence = await submit_job(bus, job)
        click.echo(f"submitted {job.job_id}", err=True)
        # A long run is announced once, when the router has predicted it.
        announce = asyncio.create_task(announce_prediction(bus, job.job_id, timeout))
        try:
            if not echo_progress:
                # Its job's final event, or the refusal of the message (a used job id …).
                return await wait_answer(bus, job.job_id, job.event_id, sequence, timeout)
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
        finally:
            announce.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await announce


ANNOUNCE_SECONDS = 5.0
"""``qbus submit`` prints the predicted run time of a job predicted to take this long
(or routed to the heavy lane)."""


def duration(seconds: float) -> str:
    """``~12 s``, ``~3 min``, ``~2.5 h``: a predicted time, as precise as it is."""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def job_prediction(request: ExecutionRequested) -> float | None:
    """The whole job's predicted run time, from one of its requests: a shot chunk
    carries its own share (chunks are balanced), a sweep chunk the whole job's."""
    seconds = request.predicted_seconds
    if seconds is not None and request.shot_start is not None and request.chunks:
        return seconds * request.chunks
    return seconds


def prediction_line(request: ExecutionRequested) -> str:
    """``predicted run time ~2 min on qiskit-aer (heavy lane, 8 chunks)``."""
    notes = [f"{request.lane} lane"]
    if request.chunks:
        notes.append(f"{request.chunks} chunks")
    seconds = job_prediction(request) or 0.0
    return f"predicted run time {duration(seconds)} on {request.engine} ({', '.join(notes)})"


async def announce_prediction(bus: Bus, job_id: str, timeout: float) -> None:
    """Print the job's predicted run time once, when it is long (``ANNOUNCE_SECONDS``) or
    the job went to the heavy lane; reads the job's first ExecutionRequested."""
    s = bus.subjects
    # Normal-priority requests have one token fewer than high/low/heavy ones.
    subjects = [s.exec("*", job_id), f"{s.prefix}.exec.*.*.{job_id}"]
    async with contextlib.aclosing(stored_events(bus, subjects, timeout)) as events:
        async for _, event in events:
            if not isinstance(event, ExecutionRequested):
                continue
            seconds = job_prediction(event)
            if event.lane == "heavy" or (seconds is not None and seconds >= ANNOUNCE_SECONDS):
                click.echo(prediction_line(event), err=True)
            return


def print_final(event: Event) -> int:
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


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--shots", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option(
    "--method",
    default="sample",
    show_default=True,
    type=click.Choice(METHODS),
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
    help=(
        "Points per chunk of a long sweep, or shots per chunk of a shot-by-shot sample job "
        "(docs/long-jobs.md); the server's default otherwise."
    ),
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
    type=click.Choice(HYPERVISORS),
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
    type=click.Choice(PRIORITIES),
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
    config = config_of(ctx)
    _check_program_locally(file, job, config)

    tracing.setup("qbus-cli")  # the submission is the trace's root span when tracing is on
    if not wait:

        async def go() -> int:
            async with await Bus.connect(config.bus) as bus:
                return await submit_job(bus, job)

        seq = asyncio.run(go())
        click.echo(f"{job.job_id}  (event log #{seq})")
        return
    try:
        final = asyncio.run(submit_and_wait(config, job, timeout))
    except TimeoutError as exc:
        raise TimedOut(f"{exc}; the job may still finish: qbus status {job.job_id}") from exc
    sys.exit(print_final(final))


def _check_program_locally(file: str, job: JobSubmitted, config: Config) -> None:
    """Parse the job's program as ingest will, and stop with its error if it does not parse.

    The bus would reject the job with the same code and position; saying so here works
    without a server and costs the user no round trip.
    """

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


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print each event as JSON.")
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show a job's state and its events in order."""

    config = config_of(ctx)

    async def go() -> int:
        async with await Bus.connect(config.bus) as bus:
            bus.trust = load_trust(config)  # a forged event is shown as forged
            state = await bus.job_state(job_id)
            if state is None:
                click.echo(f"job {job_id}: not known to this bus", err=True)
                return 1
            click.echo(
                f"job {job_id}: {state.status} (stage {state.stage}"
                + (f", engine {state.engine}" if state.engine else "")
                + ")"
            )
            if (progress := await job_progress(bus, job_id)) is not None:
                click.echo(f"  {progress}")  # a long job's chunks (docs/long-jobs.md)
            async for logged in logged_events(bus, job_id, timeout=1.0):
                seq, subject, event = logged.seq, logged.subject, logged.event
                if as_json:
                    click.echo(msgspec.json.encode(event).decode())
                    if logged.forged:
                        click.echo(f"#{seq}: FORGED ({logged.forged})", err=True)
                    continue
                forged = f"  FORGED ({logged.forged})" if logged.forged else ""
                click.echo(
                    f"#{seq:<6} {subject:<44} {event.__struct_config__.tag}  "
                    f"{_summary(event)}{forged}"
                )
            return 0

    sys.exit(asyncio.run(go()))


def _summary(event: Event) -> str:
    match event:
        case ExecutionRequested(predicted_seconds=float(seconds)):
            return f"predicted {duration(seconds)} ({event.lane} lane)"
        case JobCompleted():
            return f"verdict={event.verification.verdict} hash={event.result_hash[:19]}…"
        case JobFailed() | JobRejected():
            return f"[{event.code}] {event.message}"
    return ""


@click.command()
@click.option("--job", "job_filter", default="*", help="Only this job id.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def watch(ctx: click.Context, job_filter: str, as_json: bool) -> None:
    """Print final results as they arrive (Ctrl-C to stop).

    With ``--job`` a long job's chunk progress is shown as a bar as it changes.
    """
    config = config_of(ctx)

    async def go() -> None:
        async with await Bus.connect(config.bus) as bus:
            bus.trust = load_trust(config)  # a forged final is shown as forged
            background: list[asyncio.Task] = []
            if job_filter != "*" and not as_json:
                background.append(asyncio.create_task(follow_progress(bus, job_filter)))
            sub = await bus.nc.subscribe(bus.subjects.result(job_filter))
            async for msg in sub.messages:
                line, err = watch_line(bus.trust, msg, as_json)
                click.echo(line, err=err)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


def watch_line(trust: Trust | None, msg: Msg, as_json: bool) -> tuple[str, bool]:
    """What ``qbus watch`` prints for a message on a result subject, and whether it goes
    to stderr: a final event (its JSON with ``as_json``), or, to stderr, a message that is
    no event or a final event that no stage allowed to write it signed (``trust``: the
    stages' public keys): that one is not the job's end."""
    try:
        event = decode_event(msg.data)
    except UNDECODABLE as exc:
        return f"{msg.subject}: not a qbus event ({exc})", True
    tag = event.__struct_config__.tag
    forged = trust.problem(event, msg.subject, msg.data, msg.headers) if trust else None
    if forged:
        return f"{event.job_id} {tag} FORGED ({forged}): not the job's end", True
    if as_json:
        return msg.data.decode(), False
    return f"{time.strftime('%H:%M:%S')} {event.job_id} {tag} {_summary(event)}", False


# -- tools ------------------------------------------------------------------------------
