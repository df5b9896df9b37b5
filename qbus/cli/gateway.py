"""``qbus gateway``: the HTTP API and web console (docs/gateway.md).

The only module of the CLI that imports the gateway (FastAPI, uvicorn), so no other
command pays for it.
"""

from __future__ import annotations

from pathlib import Path

import click

from qbus.cli.context import config_of
from qbus.errors import MissingOptionalLibraryError

try:
    from qbus.gateway.app import openapi_document_text
    from qbus.gateway.server import serve
except ModuleNotFoundError as exc:  # the `http` extra is not installed
    raise MissingOptionalLibraryError(exc.name or "fastapi", "http", "qbus gateway") from exc


@click.command()
@click.option(
    "--host", default=None, help="Address to listen on (default: [gateway] host, 127.0.0.1)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default: [gateway] port, 8080; 0: any free port).",
)
@click.option(
    "--openapi",
    "openapi_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the OpenAPI document to this file and exit (the committed one is "
    "schemas/openapi.json).",
)
@click.pass_context
def gateway(
    ctx: click.Context, host: str | None, port: int | None, openapi_out: Path | None
) -> None:
    """Serve the HTTP API (/v1/…) and the web console (/console/) for the bus."""
    if openapi_out is not None:
        openapi_out.write_text(openapi_document_text())
        click.echo(f"wrote {openapi_out}")
        return
    config = config_of(ctx)
    host = host or config.gateway.host
    port = config.gateway.port if port is None else port
    click.echo(f"gateway      http://{host}:{port}/v1/  console http://{host}:{port}/console/")
    serve(config, host, port)
