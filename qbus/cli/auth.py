"""``qbus auth`` and ``qbus secrets``: set up NATS auth mode, check secrets (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import click

from qbus.bus.auth import init_auth
from qbus.cli.context import config_of
from qbus.errors import QbusError
from qbus.secrets import SecretError, provider_from_config


@click.group()
def auth() -> None:
    """NATS auth mode: users per stage and tenant, subject permissions, dev TLS."""


@auth.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write (default: <state_dir>/auth).",
)
@click.option("--tenant", "tenants", multiple=True, help="A tenant (repeatable).")
@click.option("--tls", is_flag=True, help="Also make a dev CA and server certificate.")
@click.option("--rotate", is_flag=True, help="New passwords for every user.")
@click.pass_context
def init(
    ctx: click.Context, directory: str | None, tenants: tuple[str, ...], tls: bool, rotate: bool
) -> None:
    """Write nats-auth.conf, each user's password, stage and tenant configs (and certs)."""

    config = config_of(ctx)
    out = Path(directory) if directory else Path(config.state_dir) / "auth"
    try:
        files = init_auth(
            out,
            list(tenants),
            tls=tls,
            prefix=config.bus.prefix,
            stream=config.bus.stream,
            rotate=rotate,
        )
    except QbusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"nats-server config  {files.conf}")
    click.echo(f"passwords           {files.secrets_dir}/nats/<user>  (file secrets provider)")
    if files.tls_ca:
        click.echo(f"TLS                 CA {files.tls_ca}, server {files.tls_cert}")
    click.echo(f"users               {', '.join(files.users)}")
    click.echo(f"stages' config      {files.directory / 'qbus.toml'}")
    for tenant in files.tenants:
        click.echo(f"tenant {tenant:<12} {files.directory / f'tenant-{tenant}.toml'}")
    click.echo(
        f"\nrun:  qbus --config {files.directory / 'qbus.toml'} up --nats-config {files.conf}"
    )


@click.group()
def secrets() -> None:
    """Secrets from the configured provider (env, file, vault)."""


@secrets.command("check")
@click.argument("keys", nargs=-1, required=True)
@click.pass_context
def check(ctx: click.Context, keys: tuple[str, ...]) -> None:
    """Say whether each secret KEY can be read — never its value."""

    provider = provider_from_config(config_of(ctx))
    failed = False
    for key in keys:
        try:
            value = provider.get(key)
        except SecretError as exc:
            click.echo(f"{key}: MISSING  {exc.message}")
            failed = True
        else:
            click.echo(f"{key}: ok ({provider.name}, {len(value)} characters)")
    if failed:
        raise SystemExit(1)
