"""The gateway's FastAPI app: routes, problem+json errors, the console, and one bus
connection for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.signing import load_trust
from qbus.gateway import info, jobs, problems, streams
from qbus.gateway.auth import Tokens
from qbus.gateway.console import mount_console
from qbus.gateway.hub import ResultHub
from qbus.gateway.openapi import install_openapi, openapi_text

TITLE = "qbus HTTP gateway"
VERSION = "1"


def create_app(config: Config, *, bus: Bus | None = None) -> FastAPI:
    """The gateway for the bus ``config`` names.

    Args:
        config: The settings (``[bus]`` to connect, ``[gateway]`` for tokens and limits);
            the secrets they name already read (``qbus.secrets.load_config``).
        bus: A connection to use instead of opening one (it is not closed at shutdown).

    Raises:
        ConfigError, SecretError: ``[gateway]`` names a bad tenant or a secret that
            cannot be read (before any request is served).
    """
    tokens = Tokens.from_config(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if bus is not None:  # the caller's connection, set up by the caller
            app.state.hub = ResultHub(bus)
            yield
            return
        connection = await Bus.connect(config.bus, name="qbus-gateway")
        # A forged event (one no stage allowed to write it signed) is marked in a job's
        # events and left out of the result streams, as the CLI and client do.
        connection.trust = load_trust(config)
        app.state.bus = connection
        app.state.hub = ResultHub(connection)
        try:
            yield
        finally:
            await connection.close()

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        lifespan=lifespan,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.config = config
    app.state.tokens = tokens
    app.state.bus = bus
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(streams.router)
    app.include_router(info.router)
    mount_console(app)
    install_openapi(app)
    return app


def openapi_document_text() -> str:
    """The OpenAPI document of a gateway with default settings, as schemas/openapi.json
    holds it (no bus is connected: the document does not depend on one)."""
    return openapi_text(create_app(Config()))
