"""``qbus run TEMPLATE.yaml``: run a job template through the bus (docs/templates.md)."""

from __future__ import annotations

import json
import math
import sys

import click

from qbus.cli.context import config_of
from qbus.client import SyncClient
from qbus.errors import QbusError
from qbus.producers.templates import load_template, run_template


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@click.command("run")
@click.argument("template")
@click.option("--engine", default=None, help="Engine for every job (overrides on_job.backend).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a field before validation, e.g. --set optimizer.maxiter=50 (repeatable).",
)
@click.option("--check", is_flag=True, help="Validate the template only; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for each job.")
@click.pass_context
def run(
    ctx: click.Context,
    template: str,
    engine: str | None,
    overrides: tuple[str, ...],
    check: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Run a job TEMPLATE (a YAML file, or a shipped template's name such as h2_vqe).

    Progress goes to stderr, one line per job or optimiser iteration; the summary to
    stdout. Exit status 1 when the template is invalid or one of its jobs fails.
    """

    try:
        loaded = load_template(template, overrides)
    except QbusError as exc:
        raise click.ClickException(f"[{exc.code}] {exc}") from exc
    if check:
        click.echo(f"{template}: valid ({loaded.method} template '{loaded.name}')")
        return
    config = config_of(ctx)

    def progress(line: str) -> None:
        click.echo(line, err=True)

    try:
        with SyncClient(config.bus.url, config=config.bus, producer="qbus.run") as client:
            result = run_template(
                loaded, client=client, engine=engine, progress=progress, timeout=timeout
            )
    except (QbusError, TimeoutError) as exc:
        code = getattr(exc, "code", "timeout")
        raise click.ClickException(f"[{code}] {exc}") from exc
    if as_json:
        doc = {
            "name": result.name,
            "method": result.method,
            "engine": result.engine,
            "engines_used": result.engines_used,
            "jobs": result.jobs,
            "job_ids": result.job_ids,
            "summary": result.summary,
        }
        json.dump(_json_safe(doc), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    ran = ", ".join(result.engines_used) or result.engine
    click.echo(f"== {result.name}: {result.method}, {result.jobs} job(s) on {ran}")
    for line in result.lines:
        click.echo(line)
