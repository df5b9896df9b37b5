"""``qbus doctor``: which sandbox drivers work on this machine, and how the bus is.

A module of its own: it runs a real job, so it imports an engine and the sandboxes,
which ``qbus schema`` and ``qbus engines`` (info.py) never pay for.
"""

from __future__ import annotations

import asyncio
import json
import sys

import click
import msgspec

from qbus.bus.cluster import BusReport, bus_report, format_report
from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.bus.retry import retrying
from qbus.cli.context import config_of, url_given
from qbus.hypervisor.doctor import check_drivers


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--bus",
    "bus_only",
    is_flag=True,
    help="Report the bus only: its nodes, each stream's and bucket's leader, replicas "
    "and lag, and settings that differ from the configuration.",
)
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, bus_only: bool) -> None:
    """Report which sandbox drivers work on this machine, and why one does not; with a
    bus named (``--url``, ``QBUS_URL``) or ``--bus``, also the bus or cluster.

    Runs a real job under each driver (and a trivial bubblewrap start first); exits 1
    when a driver does not work, or when the bus has an asset missing, a replica offline
    or a setting that differs from the configuration.
    """
    config = config_of(ctx)
    ok = True
    if not bus_only:
        checks = check_drivers()
        if as_json:
            click.echo(json.dumps([msgspec.structs.asdict(c) for c in checks], indent=2))
        else:
            for c in checks:
                click.echo(f"{c.driver:<8} {'ok' if c.works else 'FAILS':<6} {c.detail}")
        ok = all(c.works for c in checks)
    if bus_only or (url_given(ctx) and not as_json):
        report = asyncio.run(_report(config.bus))
        if as_json:
            click.echo(msgspec.json.format(msgspec.json.encode(report), indent=2))
        else:
            for line in format_report(report):
                click.echo(line)
        ok = ok and report.ok
    if not ok:
        sys.exit(1)


async def _report(config: BusConfig) -> BusReport:
    async with await Bus.connect(config, name="qbus-doctor") as bus:
        # A cluster electing a leader (a node just lost or back) answers late: asked
        # again, with backoff, for up to half a minute.
        return await retrying("reading the bus", lambda: bus_report(bus), retry_for=30.0)
