"""Run the gateway under uvicorn (``qbus gateway``)."""

from __future__ import annotations

import uvicorn

from qbus.bus.config import Config
from qbus.gateway.app import create_app
from qbus.gateway.ports import check_port_free


def serve(config: Config, host: str, port: int) -> None:
    """Serve the gateway on ``host:port`` until interrupted.

    Raises:
        PortInUseError: The port is taken (checked before the bus is connected).
        ConfigError, SecretError: Bad ``[gateway]`` settings or unreadable tokens.
    """
    check_port_free(host, port)
    app = create_app(config)
    # One worker: the gateway holds no state, so more capacity is more processes
    # (each its own `qbus gateway`) behind a balancer, not threads in this one.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
