"""``qbus schema`` and ``qbus engines``: what this install holds (``qbus doctor``: doctor.py)."""

from __future__ import annotations

import asyncio
import json

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.cli.context import config_of, url_given
from qbus.engines.catalog import engine_listing
from qbus.schemas.asyncapi import asyncapi_document, write_schema_files
from qbus.schemas.events import (
    json_schemas,
)


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write one <tag>.json per event and asyncapi.json here instead of printing.",
)
@click.option("--asyncapi", is_flag=True, help="Print the AsyncAPI 3.0 document instead.")
def schema(out: str | None, asyncapi: bool) -> None:
    """Export the JSON Schema of every event and the AsyncAPI document of the bus."""

    if out is not None:
        paths = write_schema_files(out)
        click.echo(f"wrote {len(paths)} files to {out}")
    elif asyncapi:
        click.echo(json.dumps(asyncapi_document(), indent=2))
    else:
        click.echo(json.dumps(json_schemas(), indent=2, sort_keys=True))


@click.command()
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

    deployed: set[str] | None = None
    if url_given(ctx):
        deployed = asyncio.run(_deployed_engines(config_of(ctx)))
    if check:
        # Deferred: engine_table loads every installed framework (the optional engine
        # extras); without --check the list comes from package metadata in ~0.4 s.
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
