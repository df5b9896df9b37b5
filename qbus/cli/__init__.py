"""The ``qbus`` command: a root group whose commands load only when they are run.

Each command group is a module of this package (``jobs``: submit, status, watch;
``local``: up, demo; ``stage``; ``info``: schema, engines; ``doctor``; ``audit``, ``chain``,
``dlq``, ``control``, ``auth``, ``top``, ``ai``, ``templates``, ``gateway``). ``COMMANDS`` maps a
command name to where it lives, and the group imports that module when the command is
invoked, so ``qbus engines`` does not pay for the chain, AI or stage code, and each
module can import what it needs at its top. Errors and exit codes: ``qbus.cli.exit``.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import click
import msgspec

from qbus.cli.exit import QbusGroup
from qbus.secrets import load_config

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS = {
    "submit": "qbus.cli.jobs:submit",
    "status": "qbus.cli.jobs:status",
    "watch": "qbus.cli.jobs:watch",
    "stage": "qbus.cli.stage:stage",
    "up": "qbus.cli.local:up",
    "demo": "qbus.cli.local:demo",
    "schema": "qbus.cli.info:schema",
    "engines": "qbus.cli.info:engines",
    "doctor": "qbus.cli.doctor:doctor",
    "audit": "qbus.cli.audit:audit",
    "chain": "qbus.cli.chain:chain",
    "dlq": "qbus.cli.dlq:dlq",
    "reroute": "qbus.cli.control:reroute",
    "cancel": "qbus.cli.control:cancel",
    "auth": "qbus.cli.auth:auth",
    "secrets": "qbus.cli.auth:secrets",
    "top": "qbus.cli.top:top",
    "ai": "qbus.cli.ai:ai",
    "run": "qbus.cli.templates:run",
    "gateway": "qbus.cli.gateway:gateway",
}
"""Command name → ``module:attribute`` of its click command."""


class LazyGroup(QbusGroup):
    """The root group: commands come from ``COMMANDS``, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup)
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
        # --url names the servers (comma-separated for a cluster), replacing [bus] servers.
        bus = msgspec.structs.replace(config.bus, url=url, servers=())
        config = msgspec.structs.replace(config, bus=bus)
    if config_path:
        # Stage processes started from here (`qbus up`) read the same file: in auth mode
        # it names their users and where their passwords are.
        os.environ["QBUS_CONFIG"] = str(Path(config_path).resolve())
    # Commands that work offline (`qbus engines`) ask the bus only when told where it is.
    ctx.obj = {"config": config, "url_given": bool(url or os.environ.get("QBUS_URL"))}


def main() -> None:
    """Entry point of the ``qbus`` script (exit codes: qbus/cli/exit.py)."""
    cli(prog_name="qbus")  # also under `python -m qbus`
