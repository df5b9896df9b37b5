"""``qbus stage NAME``: run one stage consumer in this process.

A module of its own because it imports every stage: ``qbus up`` and ``qbus demo``
(local.py) only start stage processes and never pay for that import.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from qbus.bus.subjects import STAGE_NAMES
from qbus.cli.context import config_of
from qbus.consumers.stages import run_stage
from qbus.observability import tracing
from qbus.observability.metrics import serve_or_warn


@click.command()
@click.argument("name", type=click.Choice(STAGE_NAMES))
@click.option(
    "--engine",
    default="qiskit-aer",
    show_default=True,
    help="For 'execute': the engine this executor runs.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics on this port.",
)
@click.pass_context
def stage(ctx: click.Context, name: str, engine: str, metrics_port: int | None) -> None:
    """Run one stage (ingest, rewrite, route, execute, verify, audit, anchor, control) here."""
    config = config_of(ctx)
    if name == "execute":
        # The jax engine's compiled programs persist across its per-job worker children
        # (qbus/engines/jax_engine.py, CACHE_DIR_ENV; named here so the CLI never
        # imports jax).
        cache = Path(config.state_dir, "jax-cache").resolve()
        os.environ.setdefault("QBUS_JAX_CACHE_DIR", str(cache))
    # Spans go where the OTEL_* variables say (none by default): docs/observability.md.
    tracing.setup(f"qbus-{name}")
    logging.getLogger().setLevel(logging.INFO)
    serve_or_warn(metrics_port, config.observability.metrics_addr)
    _run_fast(run_stage(name, config, engine=engine))


def _run_fast(coro: Coroutine[Any, Any, None]) -> None:
    """Run a stage on uvloop where it is installed: about a third less latency per hop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
