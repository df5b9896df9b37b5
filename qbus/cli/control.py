"""``qbus reroute`` and ``qbus cancel``: operator commands for a running job.

Each publishes one event on ``qbus.control.<job>`` and waits for the control stage's
answer: the rerouted requests, the job's JobFailed(``cancelled``), or a ControlRejected
saying why nothing changed (docs/long-jobs.md).
"""

from __future__ import annotations

import asyncio
import sys
import time

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.ledger import Ledger, LedgerStore
from qbus.cli.context import config_of
from qbus.producers.control import send_control
from qbus.schemas.events import (
    Cancel,
    ControlRejected,
    Event,
    ExecutionRequested,
    JobFailed,
    Reroute,
    new_event_id,
)


def _report(answers: list[Event]) -> int:
    head = answers[0]
    if isinstance(head, ControlRejected):
        click.echo(f"refused [{head.code}]: {head.message}", err=True)
        return 0 if head.code == "job_finished" else 1
    if isinstance(head, JobFailed):
        click.echo(f"job {head.job_id}: {head.code}: {head.message}")
        return 0
    requests = [a for a in answers if isinstance(a, ExecutionRequested)]
    if requests:
        r = requests[0]
        what = (
            f"{len(requests)} unfinished chunk(s) of {r.chunks}"
            if r.chunks is not None
            else "the job"
        )
        click.echo(f"job {r.job_id}: {what} moved to {r.engine} (generation {r.generation})")
        return 0
    click.echo(f"unexpected answer: {head.__struct_config__.tag}", err=True)
    return 1


def _run(config: Config, event: Reroute | Cancel, timeout: float) -> int:
    async def go() -> list[Event]:
        async with await Bus.connect(config.bus, name="qbus-control-cli") as bus:
            return await send_control(bus, event, timeout)

    try:
        answers = asyncio.run(go())
    except TimeoutError:
        raise click.ClickException(
            f"published {event.__struct_config__.tag} for job {event.job_id}, but the control "
            f"stage did not answer within {timeout:g} s; is `qbus stage control` running?"
        ) from None
    return _report(answers)


@click.command()
@click.argument("job_id")
@click.option("--engine", required=True, help="The engine to move the unfinished work to.")
@click.option("--reason", default="", help="Why (kept in the event log).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the answer.")
@click.pass_context
def reroute(ctx: click.Context, job_id: str, engine: str, reason: str, timeout: float) -> None:
    """Move a running job's unfinished work (its unfinished chunks) to ENGINE."""
    event = Reroute(
        event_id=new_event_id(), job_id=job_id, producer="cli", engine=engine, reason=reason
    )
    sys.exit(_run(config_of(ctx), event, timeout))


@click.command()
@click.argument("job_id")
@click.option("--reason", default="", help="Why (kept in the event log).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the answer.")
@click.pass_context
def cancel(ctx: click.Context, job_id: str, reason: str, timeout: float) -> None:
    """Cancel a job: it ends with JobFailed(cancelled); a finished job is left as it is."""
    event = Cancel(event_id=new_event_id(), job_id=job_id, producer="cli", reason=reason)
    sys.exit(_run(config_of(ctx), event, timeout))


# -- progress (used by `qbus status` and `qbus watch`) -------------------------------


def progress_bar(done: int, total: int, width: int = 30, unit: str = "chunks") -> str:
    """``[#########.....................]  12/64 chunks`` in plain text."""
    filled = width * done // total if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>4}/{total} {unit}"


def progress_line(ledger: Ledger) -> str:
    """A chunked job's progress, engines and generation in one line."""
    engines = sorted({d.engine for d in ledger.done.values()})
    shots = sum(d.shots for d in ledger.done.values())
    if shots:
        # A shot-by-shot job in shot chunks: the chunks done, and the shots they ran.
        line = progress_bar(len(ledger.done), ledger.chunks, unit="shot chunks")
        line += f" ({shots} shots done)"
    else:
        line = progress_bar(len(ledger.done), ledger.chunks)
    line += f"  generation {ledger.generation}, routed to {ledger.engine or '?'}"
    if engines:
        line += f"; done on {', '.join(engines)}"
    if ledger.status != "running":
        line += f" [{ledger.status}]"
    return line


async def job_progress(bus: Bus, job_id: str) -> str | None:
    """The progress line of a chunked job, or None for a job that is not chunked."""
    try:
        ledger, _ = await LedgerStore(bus.js, bus.config.kv_chunks).read(job_id)
    except Exception:  # no chunk bucket yet: no long job ever ran here
        return None
    if ledger is None or ledger.chunks == 0:
        return None
    return progress_line(ledger)


async def follow_progress(bus: Bus, job_id: str, echo=click.echo) -> None:
    """Print a chunked job's progress line each time it changes (until cancelled)."""
    store = LedgerStore(bus.js, bus.config.kv_chunks)
    watcher = await (await store.kv()).watch(job_id)
    try:
        async for entry in watcher:
            if entry is None or not entry.value:
                continue  # the end of the initial values
            ledger = msgspec.json.decode(entry.value, type=Ledger)
            if ledger.chunks:
                echo(f"{time.strftime('%H:%M:%S')} {job_id} {progress_line(ledger)}")
    finally:
        await watcher.stop()


__all__ = [
    "cancel",
    "follow_progress",
    "job_progress",
    "progress_bar",
    "reroute",
]
