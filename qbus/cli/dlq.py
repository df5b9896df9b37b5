"""``qbus dlq``: list dead letters, show the message behind one, replay it.

A dead letter is a message a stage gave up on after ``[bus] max_deliver`` deliveries
(docs/operations.md, "Retries and dead letters"); it lives in the event log on
``qbus.dlq.<stage>.<job>``, and the message itself stays in the log at its sequence.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from functools import partial

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.deadletter import (
    DeadLetterNotFound,
    dead_letters,
    find_dead_letter,
    original_message,
    replay,
)
from qbus.bus.signing import Signer, producer_stage
from qbus.cli.context import config_of
from qbus.schemas.events import Event
from qbus.secrets.stage_keys import stage_signer


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as JSON.")
@click.pass_context
def dlq(ctx: click.Context, as_json: bool) -> None:
    """List dead letters: messages a stage gave up on, with the reason.

    Columns: id (a unique prefix is enough for `show` and `replay`), when, stage, job,
    deliveries, reason.
    """
    if ctx.invoked_subcommand is not None:
        return

    async def read():
        async with await Bus.connect(config_of(ctx).bus, name="qbus-dlq") as bus:
            return await dead_letters(bus)

    letters = [dl for _, dl in asyncio.run(read())]
    if as_json:
        click.echo(json.dumps([msgspec.to_builtins(dl) for dl in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(f"{'ID':<10} {'WHEN (UTC)':<19}  {'STAGE':<10} {'JOB':<34} {'DELIV':>5}  REASON")
    for dl in letters:
        click.echo(
            f"{dl.event_id[:8]:<10} {_when(dl.timestamp):<19}  {dl.stage:<10} "
            f"{dl.job_id:<34} {dl.deliveries:>5}  {dl.reason}"
        )


@dlq.command("show")
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print letter and message as JSON.")
@click.pass_context
def dlq_show(ctx: click.Context, ident: str, as_json: bool) -> None:
    """Show dead letter ID and the original message (its subject, headers and payload)."""

    async def read():
        async with await Bus.connect(config_of(ctx).bus, name="qbus-dlq") as bus:
            letter = await find_dead_letter(bus, ident)
            try:
                stored = await original_message(bus, letter)
            except DeadLetterNotFound as exc:
                return letter, None, str(exc)
            return letter, stored, ""

    try:
        letter, stored, missing = asyncio.run(read())
    except DeadLetterNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    payload = stored.data.decode("utf-8", "replace") if stored is not None else None
    if as_json:
        doc = {
            "dead_letter": msgspec.to_builtins(letter),
            "message": None
            if stored is None
            else {
                "subject": stored.subject,
                "sequence": stored.seq,
                "headers": dict(stored.headers or {}),
                "payload": payload,
            },
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for key, value in msgspec.to_builtins(letter).items():
        click.echo(f"{key + ':':<16}{value}")
    if stored is None:
        click.echo(f"message:        {missing}")
        return
    click.echo(f"message:        {stored.subject} #{stored.seq}")
    for key, value in (stored.headers or {}).items():
        click.echo(f"  {key}: {value}")
    click.echo(payload)


@dlq.command("replay")
@click.argument("ident", metavar="ID")
@click.pass_context
def dlq_replay(ctx: click.Context, ident: str) -> None:
    """Publish dead letter ID's message again on its subject, for another try.

    The copy gets a fresh event id (so the server's dedupe lets it through) and a
    ``Qbus-Replay-Of`` header. The job already ended with JobFailed(dead_lettered):
    a replay cannot give it a second final event; to get a result, resubmit the job.
    """
    from nats.js.errors import APIError

    config = config_of(ctx)

    async def go():
        async with await Bus.connect(config.bus, name="qbus-dlq") as bus:
            letter = await find_dead_letter(bus, ident)
            return letter, await replay(bus, letter, partial(replay_signer, config))

    try:
        letter, (msg_id, seq) = asyncio.run(go())
    except DeadLetterNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    except APIError as exc:
        click.echo(f"the server refused the replay: {exc.description}", err=True)
        sys.exit(1)
    click.echo(f"replayed {letter.event_id} to {letter.subject} as {msg_id} (sequence {seq})")


def replay_signer(config: Config, event: Event) -> Signer | None:
    """The key of the stage that wrote ``event`` (its ``producer``), so that the stages
    accept a replayed step or result as that stage's (docs/security.md); None for a
    submission, or when the key is not at hand (the replay then goes out unsigned)."""
    stage = producer_stage(event.producer)
    return stage_signer(config, stage) if stage else None
