"""Whether the gateway's port is free: checked before anything starts, so ``qbus gateway``
and ``qbus up --http`` say which port is taken instead of failing later in uvicorn.

No web framework is imported here: ``qbus up`` checks the port without the ``http`` extra
loaded in its own process.
"""

from __future__ import annotations

import socket

from qbus.errors import QbusError


class PortInUseError(QbusError):
    """The gateway's address cannot be bound (taken by another program, or not ours)."""

    code = "port_in_use"


def check_port_free(host: str, port: int) -> None:
    """Raise unless ``host:port`` can be listened on now (port 0: any free port can).

    Raises:
        PortInUseError: The port is taken, or the address is not this machine's.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port in TIME_WAIT from a gateway just stopped is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PortInUseError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} — another program "
                "(another gateway?) holds the port; choose another with --port (or --http)"
            ) from exc
