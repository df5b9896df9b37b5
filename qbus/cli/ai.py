"""``qbus ai``: circuits from a description, job explanations and job-template plans.

``qbus ai "DESCRIPTION"`` is short for ``qbus ai ask "DESCRIPTION"``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec

from qbus.ai.assistant import circuit_from_text, explain_job, plan_template, summarise_events
from qbus.ai.client import OllamaClient
from qbus.ai.draw import draw_text
from qbus.ai.errors import AiError
from qbus.bus.config import AiConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.cli.jobs import print_final, submit_and_wait
from qbus.errors import MissingOptionalLibraryError, QbusError
from qbus.schemas.events import JobSubmitted, new_event_id, new_job_id

T = TypeVar("T")


class _AiGroup(click.Group):
    """A group whose first positional argument, when no subcommand, is a description."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The group has no options of its own: anything but a subcommand or --help
        # starts the arguments of ``ask``.
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["ask", *args]
        return super().parse_args(ctx, args)


def _ai_config(ctx: click.Context, **overrides: Any) -> tuple[Config, AiConfig]:
    config: Config = ctx.find_root().obj["config"]
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        return config, msgspec.structs.replace(config.ai, **changes)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (AiError, MissingOptionalLibraryError) as exc:
        raise click.ClickException(str(exc)) from exc


async def _asking(cfg: AiConfig, call: Callable[[OllamaClient], Awaitable[T]]) -> T:
    """``call`` on a client of the configured model, all within ``[ai] timeout``."""
    async with asyncio.timeout(cfg.timeout), OllamaClient(cfg) as client:
        return await call(client)


def _ask(cfg: AiConfig, call: Callable[[OllamaClient], Awaitable[T]]) -> T:
    """``_asking`` from a command: no model, no answer or no answer in time ends it."""
    try:
        return _run(_asking(cfg, call))
    except TimeoutError as exc:
        raise click.ClickException(
            f"the model did not answer within {cfg.timeout:g} s (--timeout / [ai] timeout)"
        ) from exc


def _provenance(reply: Any, attempts: int | None = None) -> str:
    digest = reply.model_digest.removeprefix("sha256:")[:12]
    tries = f", {attempts} attempt(s)" if attempts is not None else ""
    return f"model {reply.model} (digest {digest}), prompt {reply.prompt_version}{tries}"


_model_options = [
    click.option("--model", default=None, help="Ollama model (default: [ai] model)."),
    click.option("--host", default=None, help="Ollama server URL (default: [ai] host)."),
    click.option("--timeout", type=float, default=None, help="Seconds for the whole AI step."),
]


def _with_model_options(f: Any) -> Any:
    for option in reversed(_model_options):
        f = option(f)
    return f


@click.group(cls=_AiGroup)
def ai() -> None:
    """The AI assistant (a local Ollama model; docs/ai.md).

    \b
    qbus ai "prepare a 5-qubit GHZ state and measure all" [--submit]
    qbus ai explain JOB_ID
    qbus ai plan "ground state of H2 at 0.74 Å"
    """


@ai.command()
@click.argument("description", nargs=-1, required=True)
@click.option("--submit", is_flag=True, help="Run it through the bus and print the result.")
@click.option("--shots", type=int, default=1024, show_default=True)
@click.option(
    "--method", default="sample", show_default=True, type=click.Choice(["sample", "statevector"])
)
@click.option("--engine", default="auto", show_default=True)
@click.option("--ai-optimize", is_flag=True, help="Also ask for a checked rewrite when it runs.")
@click.option(
    "--retries", type=int, default=None, help="Retries after invalid answers ([ai] max_retries)."
)
@click.option("--wait-timeout", type=float, default=120.0, show_default=True)
@_with_model_options
@click.pass_context
def ask(
    ctx: click.Context,
    description: tuple[str, ...],
    submit: bool,
    shots: int,
    method: str,
    engine: str,
    ai_optimize: bool,
    retries: int | None,
    wait_timeout: float,
    model: str | None,
    host: str | None,
    timeout: float | None,
) -> None:
    """Ask the model for the OpenQASM 3 program DESCRIPTION describes; check and show it."""

    config, cfg = _ai_config(ctx, model=model, host=host, timeout=timeout, max_retries=retries)
    text = " ".join(description)

    answer, circuit = _ask(
        cfg,
        lambda client: circuit_from_text(
            client, text, max_retries=cfg.max_retries, limits=config.limits
        ),
    )
    click.echo(f"# {_provenance(answer.reply, answer.attempts)}")
    for i, error in enumerate(answer.errors, 1):
        click.echo(f"# attempt {i} rejected: {error}")
    click.echo(answer.text.rstrip())
    click.echo()
    click.echo(draw_text(circuit))
    if not submit:
        return

    reply = answer.reply
    job = JobSubmitted(
        event_id=new_event_id(),
        job_id=new_job_id(),
        producer="qbus.ai",
        source=answer.text,
        format="qasm3",
        shots=shots,
        method=method,
        engine=engine,
        ai_optimize=ai_optimize,
        # The job's own record of where its program came from.
        labels={
            "ai_model": reply.model,
            "ai_model_digest": reply.model_digest,
            "ai_prompt_version": reply.prompt_version,
        },
    )
    click.echo(f"\nsubmitted {job.job_id}", err=True)
    try:
        final = asyncio.run(submit_and_wait(config, job, wait_timeout))
    except (TimeoutError, QbusError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(print_final(final))


@ai.command()
@click.argument("job_id")
@click.option("--no-ai", is_flag=True, help="Only the deterministic summary.")
@_with_model_options
@click.pass_context
def explain(
    ctx: click.Context,
    job_id: str,
    no_ai: bool,
    model: str | None,
    host: str | None,
    timeout: float | None,
) -> None:
    """Summarise a job from its events: engine and why, timings, verification."""

    config, cfg = _ai_config(ctx, model=model, host=host, timeout=timeout)

    async def read() -> list:
        async with await Bus.connect(config.bus) as bus:
            return [event async for _, _, event in events_of(bus, job_id, timeout=1.0)]

    try:
        events = asyncio.run(read())
    except QbusError as exc:
        raise click.ClickException(str(exc)) from exc
    if not events:
        raise click.ClickException(f"job {job_id}: no events on this bus")
    if not no_ai:
        try:
            reply = asyncio.run(_asking(cfg, lambda client: explain_job(client, events)))
        except (AiError, MissingOptionalLibraryError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {cfg.timeout:g} s"
            click.echo(f"(AI unavailable: {reason}; deterministic summary follows)", err=True)
        else:
            click.echo(reply.text.strip())
            click.echo(f"\n# {_provenance(reply)}")
            return
    click.echo(summarise_events(events))


@ai.command()
@click.argument("description", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None)
@click.option("--retries", type=int, default=None, help="Retries after invalid answers.")
@_with_model_options
@click.pass_context
def plan(
    ctx: click.Context,
    description: tuple[str, ...],
    out: str | None,
    retries: int | None,
    model: str | None,
    host: str | None,
    timeout: float | None,
) -> None:
    """Propose a YAML job template for a simulation, validated against the template schema."""

    _, cfg = _ai_config(ctx, model=model, host=host, timeout=timeout, max_retries=retries)
    text = " ".join(description)

    answer, _ = _ask(cfg, lambda client: plan_template(client, text, max_retries=cfg.max_retries))
    document = (
        f"# proposed by {_provenance(answer.reply, answer.attempts)}\n"
        "# valid against qbus/frontends/job_template.py; run it with: qbus run FILE\n"
        + answer.text.rstrip()
        + "\n"
    )
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(document)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(document, nl=False)
