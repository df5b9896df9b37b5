"""The web console's static files (qbus/gateway/console/), served at ``/console/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from qbus.gateway.problems import Problem

CONSOLE_DIR = Path(__file__).with_name("console")


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` and send ``/`` there.

    Plain files (HTML and ES modules), no build step. A checkout without the console
    still serves the API, and answers ``/console/`` with a 404 problem saying so.
    """
    if CONSOLE_DIR.is_dir():
        app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    else:

        @app.get("/console/{path:path}", include_in_schema=False)
        async def no_console(path: str) -> None:
            raise Problem(
                404,
                "console_missing",
                f"this installation has no web console ({CONSOLE_DIR} is missing); the API "
                "is under /v1/",
            )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")
