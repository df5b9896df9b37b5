"""``qbus doctor``: which sandbox drivers work on this machine.

A module of its own: it runs a real job, so it imports an engine and the sandboxes,
which ``qbus schema`` and ``qbus engines`` (info.py) never pay for.
"""

from __future__ import annotations

import json
import sys

import click
import msgspec

from qbus.hypervisor.doctor import check_drivers


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Report which sandbox drivers work on this machine, and why one does not.

    Runs a real job under each driver (and a trivial bubblewrap start first); exits 1
    when a driver does not work.
    """
    checks = check_drivers()
    if as_json:
        click.echo(json.dumps([msgspec.structs.asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(f"{c.driver:<8} {'ok' if c.works else 'FAILS':<6} {c.detail}")
    if not all(c.works for c in checks):
        sys.exit(1)
