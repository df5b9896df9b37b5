"""The web console's static files (qbus/gateway/console/), served at ``/console/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).with_name("console")


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` and send ``/`` there.

    Plain files (HTML and ES modules), no build step; ``check_dir=False`` so a checkout
    without the console still serves the API.
    """
    app.mount(
        "/console",
        StaticFiles(directory=CONSOLE_DIR, html=True, check_dir=False),
        name="console",
    )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")
